package synapse

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// goldenLines are every example line of /work/shared/SYNAPSE-TODAY.md and of
// Synapse's docs/tcp_replication.md and commands.py docstrings, plus one
// line per command of today's table in the form Synapse publishes it.
var goldenLines = map[string]struct {
	line string
	want Command
	// wire is what Format gives back when it is not line itself.
	wire string
}{
	// SYNAPSE-TODAY.md
	"today replicate": {line: "REPLICATE ", want: Replicate{}},
	"today position":  {line: "POSITION events master 53 53", want: Position{Stream: "events", Instance: "master", PrevToken: 53, NewToken: 53}},
	"today rdata": {line: `RDATA events master 54 ["$foo1:bar.com", ...]`,
		want: RData{Stream: "events", Instance: "master", Token: 54, Row: `["$foo1:bar.com", ...]`}},
	"today rdata batch": {line: `RDATA caches master batch ["get_user_by_id",["@test:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Batch: true, Row: `["get_user_by_id",["@test:localhost:8823"],1490197670513]`}},
	"today rdata batch end": {line: `RDATA caches master 54 ["get_user_by_id",["@test4:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Token: 54, Row: `["get_user_by_id",["@test4:localhost:8823"],1490197670513]`}},

	// docs/tcp_replication.md, overview
	"docs server":           {line: "SERVER example.com", want: DirectTCP{Command: "SERVER", Data: "example.com"}},
	"docs replicate":        {line: "REPLICATE", want: Replicate{}, wire: "REPLICATE "},
	"docs position":         {line: "POSITION events master 53 53", want: Position{Stream: "events", Instance: "master", PrevToken: 53, NewToken: 53}},
	"docs rdata 54":         {line: `RDATA events master 54 ["$foo1:bar.com", ...]`, want: RData{Stream: "events", Instance: "master", Token: 54, Row: `["$foo1:bar.com", ...]`}},
	"docs rdata 55":         {line: `RDATA events master 55 ["$foo4:bar.com", ...]`, want: RData{Stream: "events", Instance: "master", Token: 55, Row: `["$foo4:bar.com", ...]`}},
	"docs format":           {line: "RDATA <stream_name> <instance_name> <token> <row_json>", want: nil},
	"docs example server":   {line: "SERVER localhost:8823", want: DirectTCP{Command: "SERVER", Data: "localhost:8823"}},
	"docs example ping":     {line: "PING 1490197665618", want: DirectTCP{Command: "PING", Data: "1490197665618"}},
	"docs example name":     {line: "NAME synapse.app.appservice", want: DirectTCP{Command: "NAME", Data: "synapse.app.appservice"}},
	"docs example events":   {line: "POSITION events master 1 1", want: Position{Stream: "events", Instance: "master", PrevToken: 1, NewToken: 1}},
	"docs example backfill": {line: "POSITION backfill master 1 1", want: Position{Stream: "backfill", Instance: "master", PrevToken: 1, NewToken: 1}},
	"docs example caches":   {line: "POSITION caches master 1 1", want: Position{Stream: "caches", Instance: "master", PrevToken: 1, NewToken: 1}},
	"docs example rdata caches": {line: `RDATA caches master 2 ["get_user_by_id",["@01register-user:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Token: 2, Row: `["get_user_by_id",["@01register-user:localhost:8823"],1490197670513]`}},
	// The docs wrap this row over two lines for display; on the wire it is
	// one message.
	"docs example rdata events": {line: `RDATA events master 14 ["$149019767112vOHxz:localhost:8823","!AFDCvgApUmpdfVjIXm:localhost:8823","m.room.guest_access","",null]`,
		want: RData{Stream: "events", Instance: "master", Token: 14, Row: `["$149019767112vOHxz:localhost:8823","!AFDCvgApUmpdfVjIXm:localhost:8823","m.room.guest_access","",null]`}},
	"docs example error": {line: "ERROR server stopping", want: DirectTCP{Command: "ERROR", Data: "server stopping"}},
	"docs batch 1": {line: `RDATA caches master batch ["get_user_by_id",["@test:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Batch: true, Row: `["get_user_by_id",["@test:localhost:8823"],1490197670513]`}},
	"docs batch 2": {line: `RDATA caches master batch ["get_user_by_id",["@test2:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Batch: true, Row: `["get_user_by_id",["@test2:localhost:8823"],1490197670513]`}},
	"docs batch 3": {line: `RDATA caches master batch ["get_user_by_id",["@test3:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Batch: true, Row: `["get_user_by_id",["@test3:localhost:8823"],1490197670513]`}},
	"docs batch end": {line: `RDATA caches master 54 ["get_user_by_id",["@test4:localhost:8823"],1490197670513]`,
		want: RData{Stream: "caches", Instance: "master", Token: 54, Row: `["get_user_by_id",["@test4:localhost:8823"],1490197670513]`}},
	"docs cache invalidation": {line: `RDATA caches master 550953771 ["get_user_by_id", ["@bob:example.com"], 1550574873251]`,
		want: RData{Stream: "caches", Instance: "master", Token: 550953771, Row: `["get_user_by_id", ["@bob:example.com"], 1550574873251]`}},
	"docs cache invalidation null": {line: `RDATA caches master 550953772 ["get_user_by_id", null, 1550574873252]`,
		want: RData{Stream: "caches", Instance: "master", Token: 550953772, Row: `["get_user_by_id", null, 1550574873252]`}},

	// commands.py docstring of RdataCommand
	"commands presence batch": {line: `RDATA presence master batch ["@foo:example.com", "online", ...]`,
		want: RData{Stream: "presence", Instance: "master", Batch: true, Row: `["@foo:example.com", "online", ...]`}},
	"commands presence 59": {line: `RDATA presence master 59 ["@baz:example.com", "online", ...]`,
		want: RData{Stream: "presence", Instance: "master", Token: 59, Row: `["@baz:example.com", "online", ...]`}},

	// Today's table, one line each, as a deployment with workers sends them.
	"multi-writer rdata": {line: `RDATA events event_persister-1 1207 ["$ev:example.org","!room:example.org","m.room.message",null,null,null,false,1,"$ev:example.org"]`,
		want: RData{Stream: "events", Instance: "event_persister-1", Token: 1207, Row: `["$ev:example.org","!room:example.org","m.room.message",null,null,null,false,1,"$ev:example.org"]`}},
	"multi-writer position": {line: "POSITION events event_persister-2 1190 1208", want: Position{Stream: "events", Instance: "event_persister-2", PrevToken: 1190, NewToken: 1208}},
	"user sync start": {line: "USER_SYNC synchrotron-0 @alice:example.org ABCDEF start 1767225600000",
		want: UserSync{InstanceID: "synchrotron-0", UserID: "@alice:example.org", DeviceID: "ABCDEF", Syncing: true, LastSyncMS: 1767225600000}},
	"user sync none": {line: "USER_SYNC synchrotron-0 @alice:example.org None end 1767225600000",
		want: UserSync{InstanceID: "synchrotron-0", UserID: "@alice:example.org", Syncing: false, LastSyncMS: 1767225600000}},
	"clear user sync": {line: "CLEAR_USER_SYNC synchrotron-0", want: ClearUserSync{InstanceID: "synchrotron-0"}},
	"federation ack":  {line: "FEDERATION_ACK federation_sender-0 4567", want: FederationAck{Instance: "federation_sender-0", Token: 4567}},
	"user ip": {line: `USER_IP @alice:example.org ["syt_abc","10.0.0.7","Element/1.11.0","ABCDEF",1767225600000]`,
		want: UserIP{UserID: "@alice:example.org", JSON: `["syt_abc","10.0.0.7","Element/1.11.0","ABCDEF",1767225600000]`}},
	"remote server up": {line: "REMOTE_SERVER_UP matrix.org", want: RemoteServerUp{Server: "matrix.org"}},
	"lock released": {line: `LOCK_RELEASED ["media_repository-0","purge_room_lock","!room:example.org"]`,
		want: LockReleased{Instance: "media_repository-0", LockName: "purge_room_lock", LockKey: "!room:example.org", raw: `["media_repository-0","purge_room_lock","!room:example.org"]`}},
	"new active task": {line: "NEW_ACTIVE_TASK GbSKpzCmFwYbkXfL", want: NewActiveTask{TaskID: "GbSKpzCmFwYbkXfL"}},
	"cancel task":     {line: "CANCEL_TASK GbSKpzCmFwYbkXfL", want: CancelTask{TaskID: "GbSKpzCmFwYbkXfL"}},
	"negative backfill": {line: "POSITION backfill master -12 -12",
		want: Position{Stream: "backfill", Instance: "master", PrevToken: -12, NewToken: -12}},
}

func TestParseGolden(t *testing.T) {
	for name, tc := range goldenLines {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.line)
			if tc.want == nil {
				// A documentation template, not a line: its token is not a
				// number, so it must be refused as malformed.
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse(%q) = %#v, %v; want ErrMalformed", tc.line, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.line, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse(%q) =\n %#v\nwant\n %#v", tc.line, got, tc.want)
			}
			wire := tc.wire
			if wire == "" {
				wire = tc.line
			}
			if f := Format(got); f != wire {
				t.Fatalf("Format(Parse(%q)) = %q, want %q", tc.line, f, wire)
			}
		})
	}
}

func TestFormatBuiltCommands(t *testing.T) {
	tests := map[string]struct {
		cmd  Command
		want string
	}{
		"replicate has its trailing space": {Replicate{}, "REPLICATE "},
		"batch rdata":                      {RData{Stream: "typing", Instance: "w1", Batch: true, Row: `["!r:x",[]]`}, `RDATA typing w1 batch ["!r:x",[]]`},
		"user sync without device":         {UserSync{InstanceID: "s", UserID: "@u:x", LastSyncMS: 5}, "USER_SYNC s @u:x None end 5"},
		"lock released compact, no HTML escaping": {
			LockReleased{Instance: "w<1>", LockName: "n&m", LockKey: "k"}, `LOCK_RELEASED ["w<1>","n&m","k"]`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Format(tc.cmd); got != tc.want {
				t.Fatalf("Format = %q, want %q", got, tc.want)
			}
			back, err := Parse(tc.want)
			if err != nil {
				t.Fatalf("Parse(Format): %v", err)
			}
			if Format(back) != tc.want {
				t.Fatalf("Format(Parse(%q)) = %q", tc.want, Format(back))
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := map[string]struct {
		line    string
		wantErr error
		// mention is a word the error must contain to say what is wrong.
		mention string
	}{
		"blank":                       {"", ErrBlankMessage, "blank"},
		"spaces":                      {"   ", ErrBlankMessage, "blank"},
		"unknown command":             {"SYNC 12", ErrUnknownCommand, "SYNC"},
		"2020 invalidate cache":       {`INVALIDATE_CACHE get_user ["@a:b"]`, ErrUnknownCommand, "INVALIDATE_CACHE"},
		"lower case name":             {"rdata events master 1 []", ErrUnknownCommand, "rdata"},
		"newline inside":              {"RDATA events master 14 [\"$a\",\n \"!b\"]", ErrMalformed, "newline"},
		"trailing newline":            {"POSITION events master 1 1\n", ErrMalformed, "newline"},
		"rdata without row":           {"RDATA events master 54", ErrMalformed, "row_json"},
		"rdata empty row":             {"RDATA events master 54 ", ErrMalformed, "row_json"},
		"rdata text token":            {"RDATA events master fifty [1]", ErrMalformed, "fifty"},
		"rdata empty stream":          {"RDATA  master 54 [1]", ErrMalformed, "empty"},
		"rdata token overflow":        {"RDATA events master 99999999999999999999 [1]", ErrMalformed, "not an integer"},
		"position 2020 form":          {"POSITION events 53", ErrMalformed, "prev_token"},
		"position text prev":          {"POSITION events master x 53", ErrMalformed, "prev_token"},
		"position text new":           {"POSITION events master 53 5x", ErrMalformed, "new_token"},
		"position extra field":        {"POSITION events master 1 2 3", ErrMalformed, "POSITION"},
		"position float":              {"POSITION events master 1 2.5", ErrMalformed, "new_token"},
		"position not utf8":           {"POSITION ev\xffents master 1 2", ErrMalformed, "UTF-8"},
		"user sync bad state":         {"USER_SYNC s @u:x None maybe 5", ErrMalformed, "maybe"},
		"user sync short":             {"USER_SYNC s @u:x start 5", ErrMalformed, "USER_SYNC"},
		"user sync text ms":           {"USER_SYNC s @u:x None start soon", ErrMalformed, "last_sync_ms"},
		"clear user sync empty":       {"CLEAR_USER_SYNC ", ErrMalformed, "CLEAR_USER_SYNC"},
		"federation ack extra":        {"FEDERATION_ACK fs 1 2", ErrMalformed, "FEDERATION_ACK"},
		"federation ack text":         {"FEDERATION_ACK fs one", ErrMalformed, "token"},
		"user ip without json":        {"USER_IP @u:x", ErrMalformed, "USER_IP"},
		"remote server up empty":      {"REMOTE_SERVER_UP", ErrMalformed, "REMOTE_SERVER_UP"},
		"lock released not json":      {"LOCK_RELEASED w1 lock key", ErrMalformed, "LOCK_RELEASED"},
		"lock released two fields":    {`LOCK_RELEASED ["w1","lock"]`, ErrMalformed, "LOCK_RELEASED"},
		"new active task empty":       {"NEW_ACTIVE_TASK ", ErrMalformed, "NEW_ACTIVE_TASK"},
		"cancel task empty":           {"CANCEL_TASK", ErrMalformed, "CANCEL_TASK"},
		"huge unknown name truncated": {strings.Repeat("X", 4096), ErrUnknownCommand, "(4096 bytes)"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd, err := Parse(tc.line)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Parse(%q) = %#v, %v; want %v", tc.line, cmd, err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %q does not mention %q", err, tc.mention)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error is %d bytes long; hostile input must not end up whole in logs", len(err.Error()))
			}
			if errors.Is(err, ErrUnknownCommand) {
				if _, ok := cmd.(Unknown); !ok {
					t.Fatalf("unknown command returned %T, want Unknown", cmd)
				}
			}
		})
	}
}
