package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/tcprepl/tcprepl/internal/replication/streams"
)

// readExamples returns the example lines of the 2020 protocol description kept in testdata,
// each with its direction: '>' server to client, '<' client to server.
func readExamples(t *testing.T, path string) (lines []string, dirs []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		l = strings.TrimPrefix(l, "    ")
		if len(l) < 3 || (l[0] != '>' && l[0] != '<') || l[1] != ' ' {
			continue
		}
		dirs = append(dirs, l[0])
		lines = append(lines, l[2:])
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return lines, dirs
}

// TestGoldenProtocolExamples: every example line of the 2020 description parses, is
// allowed in its direction, and formats back to the identical bytes.
func TestGoldenProtocolExamples(t *testing.T) {
	lines, dirs := readExamples(t, "testdata/protocol_examples.txt")
	if len(lines) < 10 {
		t.Fatalf("only %d example lines found", len(lines))
	}
	for i, line := range lines {
		cmd, err := ParseCommand([]byte(line))
		if err != nil {
			t.Errorf("parse %q: %v", line, err)
			continue
		}
		if dirs[i] == '>' && !SentByServer(cmd.Name()) || dirs[i] == '<' && !SentByClient(cmd.Name()) {
			t.Errorf("%q is not allowed in direction %c", line, dirs[i])
		}
		out, err := FormatCommand(cmd)
		if err != nil {
			t.Errorf("format %#v: %v", cmd, err)
			continue
		}
		if string(out) != line {
			t.Errorf("re-formatted\n got %q\nwant %q", out, line)
		}
	}
}

// protocolDoc is the protocol's description in the repository.
const protocolDoc = "../../docs/protocol.md"

// docExample is an example line of docs/protocol.md and where it is.
type docExample struct {
	line   string
	where  string
	fromS  bool // the doc says a server may send it
	fromC  bool // the doc says a client may send it
	exact  bool // the line is complete (not "[...]" for a row)
	format bool // formatting it back must give the same bytes
}

// protocolDocExamples extracts the examples of docs/protocol.md: the
// commands table (name, direction, example column), the indented example
// blocks ("    RDATA ..." lines and "    > " / "    < " session lines,
// whose comments after two spaces are dropped).
func protocolDocExamples(t *testing.T) []docExample {
	t.Helper()
	data, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatalf("read the protocol's description: %v", err)
	}
	var out []docExample
	inCommands := false
	for i, l := range strings.Split(string(data), "\n") {
		where := fmt.Sprintf("%s:%d", protocolDoc, i+1)
		if strings.HasPrefix(l, "## ") {
			inCommands = l == "## Commands"
		}
		switch {
		case inCommands && strings.HasPrefix(l, "| `"):
			cells := strings.Split(strings.Trim(l, "| "), " | ")
			if len(cells) != 4 {
				t.Fatalf("%s: table row with %d cells: %q", where, len(cells), l)
			}
			dir := cells[1]
			for _, ex := range strings.Split(cells[3], "`, `") {
				out = append(out, docExample{line: strings.Trim(ex, "`"), where: where, fromS: strings.Contains(dir, "S"), fromC: strings.Contains(dir, "C"), exact: true, format: true})
			}
		case strings.HasPrefix(l, "    > ") || strings.HasPrefix(l, "    < "):
			line, _, _ := strings.Cut(l[6:], "  ")
			ex := docExample{line: line, where: where, fromS: l[4] == '>', fromC: l[4] == '<', exact: true}
			if strings.Contains(line, "[...]") {
				ex.line, ex.exact = strings.Replace(line, "[...]", "[]", 1), false
			}
			out = append(out, ex)
		case strings.HasPrefix(l, "    RDATA "):
			out = append(out, docExample{line: l[4:], where: where, fromS: true, exact: true, format: true})
		}
	}
	return out
}

// TestGoldenExamplesMatchProtocolDoc: every example of docs/protocol.md
// parses, is sent in the direction the doc gives (and the doc's table agrees
// with commandTable), and the complete ones format back to the same bytes.
// The doc is in the repository, so a missing example fails rather than
// skips.
func TestGoldenExamplesMatchProtocolDoc(t *testing.T) {
	examples := protocolDocExamples(t)
	tabled := map[string]bool{}
	for _, ex := range examples {
		cmd, err := ParseCommand([]byte(ex.line))
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", ex.where, ex.line, err)
			continue
		}
		if ex.fromS && !SentByServer(cmd.Name()) || ex.fromC && !SentByClient(cmd.Name()) {
			t.Errorf("%s: %q is not allowed in the direction the doc gives", ex.where, ex.line)
		}
		if ex.format {
			tabled[cmd.Name()] = true
			id := commandIDOf(cmd.Name())
			if commandTable[id].fromServer != ex.fromS || commandTable[id].fromClient != ex.fromC {
				t.Errorf("%s: the doc's direction for %s disagrees with commandTable", ex.where, cmd.Name())
			}
		}
		if ex.format {
			if out, err := FormatCommand(cmd); err != nil || string(out) != ex.line {
				t.Errorf("%s: %q formats back as %q (%v)", ex.where, ex.line, out, err)
			}
		}
	}
	for _, name := range AllCommands {
		if !tabled[name] {
			t.Errorf("%s has no example in the commands table of %s", name, protocolDoc)
		}
	}
	if len(examples) < 30 {
		t.Fatalf("only %d examples found in %s; the test reads its commands table and indented examples", len(examples), protocolDoc)
	}
}

func strPtr(s string) *string { return &s }

// canonicalLines are lines in the exact form a 2020 Synapse writes them, one
// or more per command; each must parse to cmd and format back identically.
var canonicalLines = []struct {
	line string
	cmd  Command
}{
	{"SERVER localhost:8823", ServerCommand{ServerName: "localhost:8823"}},
	{`RDATA caches 2 ["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`,
		RdataCommand{Stream: "caches", Token: 2, Row: json.RawMessage(`["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`)}},
	{`RDATA caches batch ["a", [], 1]`, RdataCommand{Stream: "caches", Batch: true, Row: json.RawMessage(`["a", [], 1]`)}},
	{`RDATA receipts -3 ["!r:x", "m.read", "@u:x", "$e", {"ts": 1, "k": "caf\u00e9 \ud83d\ude00"}]`,
		RdataCommand{Stream: "receipts", Token: -3, Row: json.RawMessage(`["!r:x", "m.read", "@u:x", "$e", {"ts": 1, "k": "caf\u00e9 \ud83d\ude00"}]`)}},
	{"POSITION events 1", PositionCommand{Stream: "events", Token: 1}},
	{"ERROR server stopping", ErrorCommand{Message: "server stopping"}},
	{"ERROR ", ErrorCommand{}},
	{"PING 1490197665618", PingCommand{Data: "1490197665618"}},
	{"SYNC some data", SyncCommand{Data: "some data"}},
	{"NAME synapse.app.appservice", NameCommand{ClientName: "synapse.app.appservice"}},
	{"REPLICATE events 1", ReplicateCommand{Stream: "events", Token: 1}},
	{"REPLICATE events NOW", ReplicateCommand{Stream: "events", Now: true}},
	{"REPLICATE ALL NOW", ReplicateCommand{Stream: "ALL", Now: true}},
	{"USER_SYNC @a:x start 1490197665618", UserSyncCommand{UserID: "@a:x", Active: true, LastSyncMS: 1490197665618}},
	{"USER_SYNC @a:x end 0", UserSyncCommand{UserID: "@a:x", LastSyncMS: 0}},
	{"FEDERATION_ACK 123", FederationAckCommand{Token: 123}},
	{"REMOVE_PUSHER m.http pk1 @user name:x", RemovePusherCommand{AppID: "m.http", PushKey: "pk1", UserID: "@user name:x"}},
	{`INVALIDATE_CACHE get_user_by_id ["@a:x"]`, InvalidateCacheCommand{CacheFunc: "get_user_by_id", Keys: json.RawMessage(`["@a:x"]`)}},
	{`USER_IP @a:x ["tok", "10.0.0.1", "Mozilla/5.0 (X11)", "DEV", 1490197665618]`,
		UserIPCommand{UserID: "@a:x", AccessToken: "tok", IP: "10.0.0.1", UserAgent: "Mozilla/5.0 (X11)", DeviceID: strPtr("DEV"), LastSeen: 1490197665618}},
	{`USER_IP @a:x ["tok", "::1", "curl \"7\"", null, 5]`,
		UserIPCommand{UserID: "@a:x", AccessToken: "tok", IP: "::1", UserAgent: `curl "7"`, LastSeen: 5}},
}

func TestCanonicalLinesRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range canonicalLines {
		seen[tc.cmd.Name()] = true
		got, err := ParseCommand([]byte(tc.line))
		if err != nil {
			t.Errorf("parse %q: %v", tc.line, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.cmd) {
			t.Errorf("parse %q\n got %#v\nwant %#v", tc.line, got, tc.cmd)
		}
		out, err := FormatCommand(tc.cmd)
		if err != nil {
			t.Errorf("format %#v: %v", tc.cmd, err)
			continue
		}
		if string(out) != tc.line {
			t.Errorf("format\n got %q\nwant %q", out, tc.line)
		}
		// Appending keeps what dst held.
		out2, err := AppendCommand([]byte("xy"), tc.cmd)
		if err != nil || string(out2) != "xy"+tc.line {
			t.Errorf("AppendCommand onto a prefix gave %q, %v", out2, err)
		}
	}
	for _, name := range AllCommands {
		if !seen[name] {
			t.Errorf("no round-trip case for %s", name)
		}
	}
}

// TestParseTolerance covers input a Synapse peer or a human on netcat may
// send that is not in canonical form but is valid.
func TestParseTolerance(t *testing.T) {
	cases := []struct {
		line string
		want Command
	}{
		{"PING", PingCommand{}},                // no space at all: empty arguments
		{"PING 5\r", PingCommand{Data: "5"}},   // trailing CR
		{"PING 5\r\n", PingCommand{Data: "5"}}, // CRLF
		{"NAME", NameCommand{}},                // empty name
		{"ERROR a  b ", ErrorCommand{Message: "a  b "}},
		{"REPLICATE events now", ReplicateCommand{Stream: "events", Now: true}},
		{"REPLICATE all NOW", ReplicateCommand{Stream: "all", Now: true}},
		{"POSITION events +7", PositionCommand{Stream: "events", Token: 7}},
		{"FEDERATION_ACK -1", FederationAckCommand{Token: -1}},
		{`RDATA caches 3 [ "a" ,{"k" : [ ] } ]`, RdataCommand{Stream: "caches", Token: 3, Row: json.RawMessage(`[ "a" ,{"k" : [ ] } ]`)}},
		{`RDATA my stream 3 ["x"]`, nil}, // a space in the stream name makes "stream" the token
		{`INVALIDATE_CACHE f {"not": "a list"}`, InvalidateCacheCommand{CacheFunc: "f", Keys: json.RawMessage(`{"not": "a list"}`)}},
	}
	for _, tc := range cases {
		got, err := ParseCommand([]byte(tc.line))
		if tc.want == nil {
			if err == nil {
				t.Errorf("parse %q: got %#v, want an error", tc.line, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parse %q: %v", tc.line, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parse %q\n got %#v\nwant %#v", tc.line, got, tc.want)
		}
	}
	// A non-canonical row is re-encoded the Python way when formatted.
	cmd, _ := ParseCommand([]byte(`RDATA caches 3 [ "a" ,{"k" : [ ] } ]`))
	out, err := FormatCommand(cmd)
	if err != nil || string(out) != `RDATA caches 3 ["a", {"k": []}]` {
		t.Errorf("format of a parsed loose row: %q, %v", out, err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		line    string
		wantMsg string // substring of the wire text
		invalid bool
	}{
		{"", "empty line", false},
		{"   \t", "empty line", false},
		{"FOO bar", "invalid command: FOO", true},
		{"rdata caches 1 []", "invalid command: rdata", true},
		{"RDATA", "failed to parse line for RDATA: expected <stream_name> <token> <row_json>", false},
		{"RDATA caches 1", "failed to parse line for RDATA: expected", false},
		{"RDATA caches x []", `failed to parse line for RDATA: token: "x" is not an integer`, false},
		{"RDATA caches 1 [1,", "failed to parse line for RDATA: row: invalid JSON", false},
		{"RDATA caches 1 [1] x", "failed to parse line for RDATA: row: invalid JSON", false},
		{"RDATA caches 1 ", "failed to parse line for RDATA: row: invalid JSON", false},
		{"RDATA caches 99999999999999999999 []", "out of range", false},
		{"POSITION", "failed to parse line for POSITION", false},
		{"POSITION events", "failed to parse line for POSITION", false},
		{"POSITION events 1.5", "not an integer", false},
		{"POSITION events -", "not an integer", false},
		{"REPLICATE", "failed to parse line for REPLICATE", false},
		{"REPLICATE events", "failed to parse line for REPLICATE", false},
		{"REPLICATE events later", "or NOW", false},
		{"REPLICATE ALL 5", "ALL can only be replicated from NOW", false},
		{"USER_SYNC @a:x maybe 1", `state "maybe" is neither start nor end`, false},
		{"USER_SYNC @a:x start", "failed to parse line for USER_SYNC", false},
		{"USER_SYNC @a:x start soon", "last_sync_ms", false},
		{"FEDERATION_ACK", "failed to parse line for FEDERATION_ACK", false},
		{"FEDERATION_ACK 1 2", "not an integer", false},
		{"REMOVE_PUSHER a b", "failed to parse line for REMOVE_PUSHER", false},
		{"INVALIDATE_CACHE f", "failed to parse line for INVALIDATE_CACHE", false},
		{"INVALIDATE_CACHE f [", "keys are not valid JSON", false},
		{"USER_IP @a:x", "failed to parse line for USER_IP", false},
		{"USER_IP @a:x {}", "expected a JSON array", false},
		{`USER_IP @a:x ["t", "ip", "ua", null]`, "expected 5 items", false},
		{`USER_IP @a:x [1, "ip", "ua", null, 1]`, "item 0 must be a string", false},
		{`USER_IP @a:x [null, "ip", "ua", null, 1]`, "item 0 must be a string", false},
		{`USER_IP @a:x ["t", "ip", "ua", 5, 1]`, "device_id must be a string or null", false},
		{`USER_IP @a:x ["t", "ip", "ua", null, 1.5]`, "last_seen must be an integer", false},
		{"PING a\x00b", "NUL byte", false},
		{"PING \xff\xfe", "not valid UTF-8", false},
	}
	for _, tc := range cases {
		_, err := ParseCommand([]byte(tc.line))
		var perr *ProtocolError
		if !errors.As(err, &perr) {
			t.Errorf("parse %q: got %v, want a *ProtocolError", tc.line, err)
			continue
		}
		if !strings.Contains(perr.Error(), tc.wantMsg) {
			t.Errorf("parse %q: error %q does not contain %q", tc.line, perr.Error(), tc.wantMsg)
		}
		if perr.Invalid != tc.invalid {
			t.Errorf("parse %q: Invalid=%v, want %v", tc.line, perr.Invalid, tc.invalid)
		}
	}
	_, err := ParseCommand(nil)
	if !errors.Is(err, ErrEmptyLine) {
		t.Errorf("empty line error %v does not wrap ErrEmptyLine", err)
	}
}

func TestParseDoesNotAliasInput(t *testing.T) {
	line := []byte(`RDATA caches 1 ["abc"]`)
	cmd, err := ParseCommand(line)
	if err != nil {
		t.Fatal(err)
	}
	copy(line[len(line)-6:], "zzzzz")
	if got := string(cmd.(RdataCommand).Row); got != `["abc"]` {
		t.Fatalf("row changed with the input buffer: %q", got)
	}
}

func TestFormatErrors(t *testing.T) {
	cases := []struct {
		cmd  Command
		want string
	}{
		{PingCommand{Data: "a\nb"}, "newline"},
		{ErrorCommand{Message: "a\rb"}, "newline"},
		{SyncCommand{Data: "a\x00"}, "NUL"},
		{NameCommand{ClientName: "\xff"}, "UTF-8"},
		{ServerCommand{ServerName: "x\n"}, "newline"},
		{RdataCommand{Stream: "my stream", Token: 1, Row: json.RawMessage(`[]`)}, "space"},
		{RdataCommand{Stream: "caches", Token: 1, Row: json.RawMessage(`[`)}, "invalid JSON"},
		{RdataCommand{Stream: "caches", Token: 1}, "invalid JSON"},
		{PositionCommand{Stream: "a b", Token: 1}, "space"},
		{ReplicateCommand{Stream: "ALL", Token: 3}, "ALL can only be replicated from NOW"},
		{ReplicateCommand{Stream: "a b", Now: true}, "space"},
		{UserSyncCommand{UserID: "@a b:x"}, "space"},
		{RemovePusherCommand{AppID: "a b", PushKey: "k", UserID: "u"}, "space"},
		{RemovePusherCommand{AppID: "a", PushKey: "k k", UserID: "u"}, "space"},
		{RemovePusherCommand{AppID: "a", PushKey: "k", UserID: "u\n"}, "newline"},
		{InvalidateCacheCommand{CacheFunc: "f", Keys: json.RawMessage(`[1,]`)}, "invalid JSON"},
		{InvalidateCacheCommand{CacheFunc: "f g", Keys: json.RawMessage(`[]`)}, "space"},
		{UserIPCommand{UserID: "u v"}, "space"},
		{UserIPCommand{UserID: "u", UserAgent: "\xff"}, "UTF-8"},
		{UserIPCommand{UserID: "u", DeviceID: strPtr("\xff")}, "UTF-8"},
		{nil, "unknown command type"},
	}
	for _, tc := range cases {
		out, err := AppendCommand([]byte("keep"), tc.cmd)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("format %#v: error %v, want one containing %q", tc.cmd, err, tc.want)
		}
		if string(out) != "keep" {
			t.Errorf("format %#v: dst changed to %q on error", tc.cmd, out)
		}
	}
}

// TestUserIPEscapesLikePython checks the USER_IP array's strings use
// Python's escaping (non-ASCII as \uXXXX).
func TestUserIPEscapesLikePython(t *testing.T) {
	out, err := FormatCommand(UserIPCommand{UserID: "@é:x", AccessToken: "t", IP: "ip", UserAgent: "Navigateur é\t😀", LastSeen: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := `USER_IP @é:x ["t", "ip", "Navigateur \u00e9\t\ud83d\ude00", null, 1]`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	back, err := ParseCommand(out)
	if err != nil {
		t.Fatal(err)
	}
	if ua := back.(UserIPCommand).UserAgent; ua != "Navigateur é\t😀" {
		t.Fatalf("user agent round trip: %q", ua)
	}
}

func TestDirectionTables(t *testing.T) {
	for _, name := range AllCommands {
		inServer := bytes.Contains([]byte(","+strings.Join(ServerCommands, ",")+","), []byte(","+name+","))
		inClient := bytes.Contains([]byte(","+strings.Join(ClientCommands, ",")+","), []byte(","+name+","))
		if SentByServer(name) != inServer || SentByClient(name) != inClient {
			t.Errorf("%s: tables and functions disagree", name)
		}
		if !inServer && !inClient {
			t.Errorf("%s is in no direction", name)
		}
	}
	// docs/protocol.md: ERROR, PING and SYNC go both ways; the rest one way.
	for _, both := range []string{CmdError, CmdPing, CmdSync} {
		if !SentByServer(both) || !SentByClient(both) {
			t.Errorf("%s must be valid in both directions", both)
		}
	}
	for _, s := range []string{CmdServer, CmdRdata, CmdPosition} {
		if SentByClient(s) {
			t.Errorf("a client must not send %s", s)
		}
	}
	for _, c := range []string{CmdName, CmdReplicate, CmdUserSync, CmdFederationAck, CmdRemovePusher, CmdInvalidateCache, CmdUserIP} {
		if SentByServer(c) {
			t.Errorf("a server must not send %s", c)
		}
	}
	if SentByServer("FOO") || SentByClient("FOO") {
		t.Error("unknown commands must be invalid in both directions")
	}
}

// TestInternNameCoversTheTable keeps internName's switch in step with
// commandTable, by which the counters and direction checks are indexed, and
// checks the lists derived from the table.
func TestInternNameCoversTheTable(t *testing.T) {
	for id, entry := range commandTable {
		got, gotID := internName([]byte(entry.name))
		if got != entry.name || gotID != commandID(id) {
			t.Errorf("%s: internName gives %q, %d; want id %d", entry.name, got, gotID, id)
		}
		if SentByServer(entry.name) != entry.fromServer || SentByClient(entry.name) != entry.fromClient {
			t.Errorf("%s: direction checks disagree with the table", entry.name)
		}
	}
	if _, id := internName([]byte("NOPE")); id != idUnknown {
		t.Errorf("unknown name has id %d", id)
	}
	wantServer := []string{CmdServer, CmdRdata, CmdPosition, CmdError, CmdPing, CmdSync}
	wantClient := []string{CmdError, CmdPing, CmdSync, CmdName, CmdReplicate, CmdUserSync, CmdFederationAck, CmdRemovePusher, CmdInvalidateCache, CmdUserIP}
	if !slices.Equal(ServerCommands, wantServer) || !slices.Equal(ClientCommands, wantClient) || len(AllCommands) != int(numCommands) {
		t.Errorf("lists: server %v, client %v, all %v", ServerCommands, ClientCommands, AllCommands)
	}
}

// TestParseRdataArgsKnownStream: a stream name equal to the one passed as
// known is reused as is; any other name is still checked.
func TestParseRdataArgsKnownStream(t *testing.T) {
	stream, token, batch, row, err := parseRdataArgs([]byte(`my_stream 12 [1]`), "")
	if err != nil || stream != "my_stream" || token != 12 || batch || string(row) != "[1]" {
		t.Fatalf("got %q %d %v %q %v", stream, token, batch, row, err)
	}
	again, _, batch, _, err := parseRdataArgs([]byte(`my_stream batch {}`), stream)
	if err != nil || !batch || unsafe.StringData(again) != unsafe.StringData(stream) {
		t.Fatalf("known stream not reused: %q %v %v", again, batch, err)
	}
	for _, bad := range []string{"my_str\xffeam 1 []", "my_stream\x00 1 []", "my_stream 1", "my_stream", "my_stream x []", "my_stream 1 [\x00]"} {
		if _, _, _, _, err := parseRdataArgs([]byte(bad), stream); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, name := range []string{"events", "caches", "typing", "user_signature"} {
		s, _, _, _, err := parseRdataArgs([]byte(name+" 1 []"), "other")
		b := []byte(name)
		if err != nil || s != name || testing.AllocsPerRun(10, func() { _ = internStream(b) }) != 0 {
			t.Errorf("standard stream %q not interned (%v)", name, err)
		}
	}
}

// TestParseIntAgreesWithStrconv: parseInt (with its fast path for up to 18
// digits) accepts exactly what strconv.ParseInt does in base 10, with the
// same value, around every length and the int64 limits.
func TestParseIntAgreesWithStrconv(t *testing.T) {
	inputs := []string{"", "+", "-", "0", "-0", "+0", "7", "-7", "1a", "a1", " 1", "1 ", "--1", "+-1",
		"999999999999999999", "-999999999999999999", "1000000000000000000", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "-9223372036854775809", "00000000000000000000012",
		"99999999999999999999", "12345678901234567x", "123456789012345678x"}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		b := make([]byte, rng.IntN(22))
		for i := range b {
			b[i] = '0' + byte(rng.IntN(10))
		}
		if len(b) > 0 && rng.IntN(4) == 0 {
			b[0] = "+-"[rng.IntN(2)]
		}
		if len(b) > 0 && rng.IntN(10) == 0 {
			b[rng.IntN(len(b))] = "x/:"[rng.IntN(3)]
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		got, err := parseInt([]byte(in))
		want, werr := strconv.ParseInt(in, 10, 64)
		if (err == nil) != (werr == nil) || got != want && err == nil {
			t.Fatalf("parseInt(%q) = %d, %v; strconv: %d, %v", in, got, err, want, werr)
		}
	}
}

// TestInternStreamCoversTheStandardStreams: every standard stream name is
// interned (parsing a line that names it allocates no string).
func TestInternStreamCoversTheStandardStreams(t *testing.T) {
	for _, name := range streams.Standard() {
		b := []byte(name)
		if got := internStream(b); got != name {
			t.Fatalf("internStream(%q) = %q", name, got)
		}
		if allocs := testing.AllocsPerRun(10, func() { _ = internStream(b) }); allocs != 0 {
			t.Errorf("internStream(%q) allocates %v times", name, allocs)
		}
	}
}
