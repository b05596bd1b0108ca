package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
	"github.com/tcprepl/tcprepl/internal/replication/streams"
)

// ProtocolError is a line the protocol does not allow. Its Error text is what
// goes on the wire after "ERROR " when a peer sends such a line, so it names
// the command and what failed to parse, as Synapse's messages do.
type ProtocolError struct {
	// Command is the command name of the line, "" when it had none.
	Command string
	// Invalid is set when the command is unknown or not allowed in the
	// direction it was sent; the wire text is then "invalid command: NAME".
	Invalid bool
	// Msg says what is wrong with the line's arguments.
	Msg string
	// Err is the underlying error, if any (e.g. a *JSONSyntaxError).
	Err error
}

func (e *ProtocolError) Error() string {
	switch {
	case e.Invalid:
		return "invalid command: " + e.Command
	case e.Command == "":
		return e.Msg
	default:
		return "failed to parse line for " + e.Command + ": " + e.Msg
	}
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// ErrEmptyLine is wrapped by the ProtocolError for a line that is empty or
// only whitespace; connections ignore such lines instead of parsing them.
var ErrEmptyLine = errors.New("empty line")

// isBlank reports whether line has only whitespace (Python's bytes.strip
// set), which the protocol says to ignore.
func isBlank(line []byte) bool {
	for _, c := range line {
		switch c {
		case ' ', '\t', '\n', '\r', '\v', '\f':
		default:
			return false
		}
	}
	return true
}

// ParseCommand parses one line (without its newline; a trailing "\r\n" or
// "\n" is tolerated) into its typed command. The command does not alias line.
// Every failure is a *ProtocolError. Direction is not checked here: see
// SentByServer and SentByClient.
func ParseCommand(line []byte) (Command, error) {
	return parseLine(line, true)
}

// parseLine is ParseCommand; with copyBytes false the JSON fields of the
// command alias line, which the connection reader uses to avoid copying rows
// it will copy anyway.
func parseLine(line []byte, copyBytes bool) (Command, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if isBlank(line) {
		return nil, &ProtocolError{Msg: "empty line", Err: ErrEmptyLine}
	}
	name, rest := splitName(line)
	if bytes.IndexByte(line, 0) >= 0 {
		return nil, &ProtocolError{Command: safeName(name), Msg: "line contains a NUL byte"}
	}
	if !utf8.Valid(line) {
		return nil, &ProtocolError{Command: safeName(name), Msg: "line is not valid UTF-8"}
	}
	known, _ := internName(name)
	return parseArgs(known, rest, copyBytes)
}

// splitName splits a line at its first space. A line without a space is a
// command with empty arguments (the 2020 code crashed on it).
func splitName(line []byte) (name, rest []byte) {
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		return line[:i], line[i+1:]
	}
	return line, nil
}

// safeName makes a command name fit to quote in an error before the line has
// been checked for UTF-8 and NULs.
func safeName(name []byte) string {
	if len(name) > 32 {
		name = name[:32]
	}
	q := strconv.QuoteToASCII(string(name))
	return q[1 : len(q)-1] // without the quotes
}

// internName returns the constant for a known command name, so parsing a
// line does not allocate for its name, and its id (idUnknown for an unknown
// name). TestInternNameCoversTheTable checks it against commandTable.
func internName(name []byte) (string, commandID) {
	// A switch on string(name) neither allocates nor compares against every
	// name in turn.
	switch string(name) {
	case CmdServer:
		return CmdServer, idServer
	case CmdRdata:
		return CmdRdata, idRdata
	case CmdPosition:
		return CmdPosition, idPosition
	case CmdError:
		return CmdError, idError
	case CmdPing:
		return CmdPing, idPing
	case CmdSync:
		return CmdSync, idSync
	case CmdName:
		return CmdName, idName
	case CmdReplicate:
		return CmdReplicate, idReplicate
	case CmdUserSync:
		return CmdUserSync, idUserSync
	case CmdFederationAck:
		return CmdFederationAck, idFederationAck
	case CmdRemovePusher:
		return CmdRemovePusher, idRemovePusher
	case CmdInvalidateCache:
		return CmdInvalidateCache, idInvalidateCache
	case CmdUserIP:
		return CmdUserIP, idUserIP
	}
	return string(name), idUnknown
}

// internStream returns the constant for the name of a stream of
// docs/protocol.md, so parsing a line that names one does not allocate a string.
func internStream(b []byte) string {
	// A switch on string(b) does not allocate and finds the case by length
	// and a binary search rather than comparing each name in turn.
	switch string(b) {
	case streams.Events:
		return streams.Events
	case streams.Backfill:
		return streams.Backfill
	case streams.Presence:
		return streams.Presence
	case streams.Typing:
		return streams.Typing
	case streams.Receipts:
		return streams.Receipts
	case streams.PushRules:
		return streams.PushRules
	case streams.Pushers:
		return streams.Pushers
	case streams.Caches:
		return streams.Caches
	case streams.PublicRooms:
		return streams.PublicRooms
	case streams.DeviceLists:
		return streams.DeviceLists
	case streams.ToDevice:
		return streams.ToDevice
	case streams.Federation:
		return streams.Federation
	case streams.TagAccountData:
		return streams.TagAccountData
	case streams.AccountData:
		return streams.AccountData
	case streams.Groups:
		return streams.Groups
	case streams.UserSignature:
		return streams.UserSignature
	}
	return string(b)
}

// splitArgs splits rest at single spaces into exactly n fields, the last
// being the rest of the line, as Python's str.split(" ", n-1) unpacked into
// n names does.
func splitArgs(rest []byte, n int, fields [][]byte) ([][]byte, bool) {
	fields = fields[:0]
	for len(fields) < n-1 {
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			return nil, false
		}
		fields = append(fields, rest[:i])
		rest = rest[i+1:]
	}
	return append(fields, rest), true
}

// parseInt parses a decimal integer as the 2020 code's int() accepted it in
// practice: an optional sign and ASCII digits. It does not allocate: it runs
// for every RDATA line.
func parseInt(b []byte) (int64, error) {
	digits := b
	neg := false
	if len(digits) > 0 && (digits[0] == '+' || digits[0] == '-') {
		neg = digits[0] == '-'
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return 0, fmt.Errorf("%q is not an integer", b)
	}
	if len(digits) <= 18 {
		// Up to 18 digits cannot overflow: no range check per digit.
		var n int64
		for _, c := range digits {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%q is not an integer", b)
			}
			n = n*10 + int64(c-'0')
		}
		if neg {
			n = -n
		}
		return n, nil
	}
	// Accumulate negatively so that the most negative int64 parses too.
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not an integer", b)
		}
		d := int64(c - '0')
		if n < (math.MinInt64+d)/10 {
			return 0, fmt.Errorf("%q is out of range for a 64-bit integer", b)
		}
		n = n*10 - d
	}
	if !neg {
		if n == math.MinInt64 {
			return 0, fmt.Errorf("%q is out of range for a 64-bit integer", b)
		}
		n = -n
	}
	return n, nil
}

func cloneIf(b []byte, copyBytes bool) []byte {
	if copyBytes {
		return bytes.Clone(b)
	}
	return b
}

func parseArgs(name string, rest []byte, copyBytes bool) (Command, error) {
	bad := func(format string, args ...any) error {
		return &ProtocolError{Command: name, Msg: fmt.Sprintf(format, args...)}
	}
	var buf [3][]byte
	switch name {
	case CmdServer:
		return ServerCommand{ServerName: string(rest)}, nil
	case CmdError:
		return ErrorCommand{Message: string(rest)}, nil
	case CmdPing:
		return PingCommand{Data: string(rest)}, nil
	case CmdSync:
		return SyncCommand{Data: string(rest)}, nil
	case CmdName:
		return NameCommand{ClientName: string(rest)}, nil

	case CmdRdata:
		cmd, err := parseRdata(rest, copyBytes)
		if err != nil {
			return nil, err
		}
		return cmd, nil

	case CmdPosition:
		f, ok := splitArgs(rest, 2, buf[:0])
		if !ok {
			return nil, bad("expected <stream_name> <token>")
		}
		t, err := parseInt(f[1])
		if err != nil {
			return nil, bad("token: %v", err)
		}
		return PositionCommand{Stream: internStream(f[0]), Token: t}, nil

	case CmdReplicate:
		f, ok := splitArgs(rest, 2, buf[:0])
		if !ok {
			return nil, bad("expected <stream_name> <token>")
		}
		cmd := ReplicateCommand{Stream: internStream(f[0])}
		if string(f[1]) == "NOW" || string(f[1]) == "now" {
			cmd.Now = true
			return cmd, nil
		}
		t, err := parseInt(f[1])
		if err != nil {
			return nil, bad("token: %v (or NOW)", err)
		}
		if cmd.Stream == ReplicateAll {
			return nil, bad("stream ALL can only be replicated from NOW")
		}
		cmd.Token = t
		return cmd, nil

	case CmdUserSync:
		f, ok := splitArgs(rest, 3, buf[:0])
		if !ok {
			return nil, bad("expected <user_id> <state> <last_sync_ms>")
		}
		cmd := UserSyncCommand{UserID: string(f[0])}
		switch string(f[1]) {
		case "start":
			cmd.Active = true
		case "end":
		default:
			return nil, bad("state %q is neither start nor end", f[1])
		}
		t, err := parseInt(f[2])
		if err != nil {
			return nil, bad("last_sync_ms: %v", err)
		}
		cmd.LastSyncMS = t
		return cmd, nil

	case CmdFederationAck:
		t, err := parseInt(rest)
		if err != nil {
			return nil, bad("token: %v", err)
		}
		return FederationAckCommand{Token: t}, nil

	case CmdRemovePusher:
		f, ok := splitArgs(rest, 3, buf[:0])
		if !ok {
			return nil, bad("expected <app_id> <push_key> <user_id>")
		}
		return RemovePusherCommand{AppID: string(f[0]), PushKey: string(f[1]), UserID: string(f[2])}, nil

	case CmdInvalidateCache:
		f, ok := splitArgs(rest, 2, buf[:0])
		if !ok {
			return nil, bad("expected <cache_func> <keys_json>")
		}
		if !jsonscan.Valid(f[1]) {
			return nil, bad("keys are not valid JSON")
		}
		return InvalidateCacheCommand{CacheFunc: string(f[0]), Keys: cloneIf(f[1], copyBytes)}, nil

	case CmdUserIP:
		f, ok := splitArgs(rest, 2, buf[:0])
		if !ok {
			return nil, bad("expected <user_id> <json array>")
		}
		return parseUserIP(name, string(f[0]), f[1])
	}
	return nil, &ProtocolError{Command: safeName([]byte(name)), Invalid: true}
}

// parseRdata parses RDATA's arguments. It returns the command by value so
// that it is not boxed into an interface.
func parseRdata(rest []byte, copyBytes bool) (RdataCommand, error) {
	stream, token, batch, row, err := parseRdataArgs(rest, "")
	if err != nil {
		return RdataCommand{}, err
	}
	return RdataCommand{Stream: stream, Token: token, Batch: batch, Row: cloneIf(row, copyBytes)}, nil
}

// parseRdataArgs parses RDATA's arguments, `<stream> <token> <row>` split at
// the first two spaces as splitArgs(rest, 3) does, without building a
// command: it runs for every row a client receives. row aliases rest. A
// stream name equal to known (a name this function returned before) is
// returned as known, without allocating or checking it again.
func parseRdataArgs(rest []byte, known string) (stream string, token int64, batch bool, row []byte, err error) {
	var i int
	if n := len(known); len(rest) > n && rest[n] == ' ' && string(rest[:n]) == known {
		// The same first space IndexByte would find: known has no space.
		i = n
	} else {
		i = bytes.IndexByte(rest, ' ')
	}
	j := -1
	if i >= 0 {
		j = bytes.IndexByte(rest[i+1:], ' ')
	}
	if j < 0 {
		return "", 0, false, nil, &ProtocolError{Command: CmdRdata, Msg: "expected <stream_name> <token> <row_json>"}
	}
	name, tok, row := rest[:i], rest[i+1:i+1+j], rest[i+2+j:]
	// The connection's read loop leaves the whole-line checks to this
	// function for RDATA: the token is digits, the row is checked as JSON
	// (UTF-8 and no NUL included), which leaves the stream name.
	if string(name) == known {
		stream = known
	} else {
		if bytes.IndexByte(name, 0) >= 0 || !utf8.Valid(name) {
			return "", 0, false, nil, &ProtocolError{Command: CmdRdata, Msg: "stream name is not valid UTF-8 or contains a NUL byte"}
		}
		stream = internStream(name)
	}
	if string(tok) == "batch" {
		batch = true
	} else {
		t, err := parseInt(tok)
		if err != nil {
			return "", 0, false, nil, &ProtocolError{Command: CmdRdata, Msg: "token: " + err.Error()}
		}
		token = t
	}
	if !jsonscan.Valid(row) {
		_, err := AppendPythonJSON(nil, row) // for a precise message
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return "", 0, false, nil, &ProtocolError{Command: CmdRdata, Msg: "row: " + err.Error(), Err: err}
	}
	return stream, token, batch, row, nil
}

func parseUserIP(name, userID string, raw []byte) (Command, error) {
	var fields []json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, &ProtocolError{Command: name, Msg: "expected a JSON array [access_token, ip, user_agent, device_id, last_seen]", Err: err}
	}
	if len(fields) != 5 {
		return nil, &ProtocolError{Command: name, Msg: fmt.Sprintf("expected 5 items in [access_token, ip, user_agent, device_id, last_seen], got %d", len(fields))}
	}
	cmd := UserIPCommand{UserID: userID}
	for i, dst := range []*string{&cmd.AccessToken, &cmd.IP, &cmd.UserAgent} {
		if err := json.Unmarshal(fields[i], dst); err != nil || string(fields[i]) == "null" {
			return nil, &ProtocolError{Command: name, Msg: fmt.Sprintf("item %d must be a string", i), Err: err}
		}
	}
	if err := json.Unmarshal(fields[3], &cmd.DeviceID); err != nil {
		return nil, &ProtocolError{Command: name, Msg: "device_id must be a string or null", Err: err}
	}
	if err := json.Unmarshal(fields[4], &cmd.LastSeen); err != nil {
		return nil, &ProtocolError{Command: name, Msg: "last_seen must be an integer", Err: err}
	}
	return cmd, nil
}

// FormatCommand returns the command's line, without the newline.
func FormatCommand(c Command) ([]byte, error) {
	return AppendCommand(nil, c)
}

// errFieldBreaksLine and errFieldHasSpace describe values that cannot be put
// on one protocol line.
var (
	errFieldBreaksLine = errors.New("contains a newline, carriage return or NUL")
	errFieldHasSpace   = errors.New("contains a space, which would split it on the wire")
)

// checkText checks a field that is the rest of its line.
func checkText(what, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\n' || c == '\r' || c == 0 {
			return fmt.Errorf("%s %q %w", what, s, errFieldBreaksLine)
		}
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s %q is not valid UTF-8", what, s)
	}
	return nil
}

// checkWord checks a field that is followed by more fields on its line.
func checkWord(what, s string) error {
	if err := checkText(what, s); err != nil {
		return err
	}
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return fmt.Errorf("%s %q %w", what, s, errFieldHasSpace)
		}
	}
	return nil
}

// AppendCommand appends the command's line, without the newline, to dst. JSON
// fields are re-encoded as Python's json writes them. A field that cannot be
// put on one line (a newline in it, a space in a field that is not the last,
// invalid JSON) is an error and dst is returned unchanged.
func AppendCommand(dst []byte, c Command) ([]byte, error) {
	start := len(dst)
	out, err := appendCommand(dst, c)
	if err != nil {
		return dst[:start], fmt.Errorf("format %s: %w", commandName(c), err)
	}
	return out, nil
}

func commandName(c Command) string {
	if c == nil {
		return "<nil command>"
	}
	return c.Name()
}

func appendCommand(dst []byte, c Command) ([]byte, error) {
	switch c := c.(type) {
	case ServerCommand:
		if err := checkText("server name", c.ServerName); err != nil {
			return dst, err
		}
		return append(append(dst, "SERVER "...), c.ServerName...), nil
	case ErrorCommand:
		if err := checkText("message", c.Message); err != nil {
			return dst, err
		}
		return append(append(dst, "ERROR "...), c.Message...), nil
	case PingCommand:
		if err := checkText("data", c.Data); err != nil {
			return dst, err
		}
		return append(append(dst, "PING "...), c.Data...), nil
	case SyncCommand:
		if err := checkText("data", c.Data); err != nil {
			return dst, err
		}
		return append(append(dst, "SYNC "...), c.Data...), nil
	case NameCommand:
		if err := checkText("name", c.ClientName); err != nil {
			return dst, err
		}
		return append(append(dst, "NAME "...), c.ClientName...), nil

	case RdataCommand:
		if err := checkWord("stream", c.Stream); err != nil {
			return dst, err
		}
		dst = appendRdataPrefix(dst, c.Stream, c.Token, c.Batch)
		return AppendPythonJSON(dst, c.Row)

	case PositionCommand:
		if err := checkWord("stream", c.Stream); err != nil {
			return dst, err
		}
		dst = append(append(dst, "POSITION "...), c.Stream...)
		return strconv.AppendInt(append(dst, ' '), c.Token, 10), nil

	case ReplicateCommand:
		if err := checkWord("stream", c.Stream); err != nil {
			return dst, err
		}
		dst = append(append(dst, "REPLICATE "...), c.Stream...)
		if c.Now {
			return append(dst, " NOW"...), nil
		}
		if c.Stream == ReplicateAll {
			return dst, errors.New("stream ALL can only be replicated from NOW")
		}
		return strconv.AppendInt(append(dst, ' '), c.Token, 10), nil

	case UserSyncCommand:
		if err := checkWord("user id", c.UserID); err != nil {
			return dst, err
		}
		dst = append(append(dst, "USER_SYNC "...), c.UserID...)
		if c.Active {
			dst = append(dst, " start "...)
		} else {
			dst = append(dst, " end "...)
		}
		return strconv.AppendInt(dst, c.LastSyncMS, 10), nil

	case FederationAckCommand:
		return strconv.AppendInt(append(dst, "FEDERATION_ACK "...), c.Token, 10), nil

	case RemovePusherCommand:
		if err := checkWord("app id", c.AppID); err != nil {
			return dst, err
		}
		if err := checkWord("push key", c.PushKey); err != nil {
			return dst, err
		}
		if err := checkText("user id", c.UserID); err != nil {
			return dst, err
		}
		dst = append(append(dst, "REMOVE_PUSHER "...), c.AppID...)
		dst = append(append(dst, ' '), c.PushKey...)
		return append(append(dst, ' '), c.UserID...), nil

	case InvalidateCacheCommand:
		if err := checkWord("cache function", c.CacheFunc); err != nil {
			return dst, err
		}
		dst = append(append(dst, "INVALIDATE_CACHE "...), c.CacheFunc...)
		return AppendPythonJSON(append(dst, ' '), c.Keys)

	case UserIPCommand:
		if err := checkWord("user id", c.UserID); err != nil {
			return dst, err
		}
		for _, f := range []struct{ what, s string }{{"access token", c.AccessToken}, {"ip", c.IP}, {"user agent", c.UserAgent}} {
			if !utf8.ValidString(f.s) {
				return dst, fmt.Errorf("%s is not valid UTF-8", f.what)
			}
		}
		if c.DeviceID != nil && !utf8.ValidString(*c.DeviceID) {
			return dst, errors.New("device id is not valid UTF-8")
		}
		dst = append(append(dst, "USER_IP "...), c.UserID...)
		dst = append(dst, " ["...)
		dst = appendPyString(dst, c.AccessToken)
		dst = append(dst, ", "...)
		dst = appendPyString(dst, c.IP)
		dst = append(dst, ", "...)
		dst = appendPyString(dst, c.UserAgent)
		dst = append(dst, ", "...)
		if c.DeviceID == nil {
			dst = append(dst, "null"...)
		} else {
			dst = appendPyString(dst, *c.DeviceID)
		}
		dst = append(dst, ", "...)
		dst = strconv.AppendInt(dst, c.LastSeen, 10)
		return append(dst, ']'), nil
	}
	return dst, fmt.Errorf("unknown command type %T", c)
}

// appendRdataPrefix appends "RDATA <stream> <token> " (or the word batch).
func appendRdataPrefix(dst []byte, stream string, token int64, batch bool) []byte {
	dst = append(append(dst, "RDATA "...), stream...)
	if batch {
		return append(dst, " batch "...)
	}
	return append(strconv.AppendInt(append(dst, ' '), token, 10), ' ')
}

// appendPyString appends s as a JSON string the way Python's json writes it.
// s must be valid UTF-8.
func appendPyString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		dst = appendPyRune(dst, r)
	}
	return append(dst, '"')
}
