package synapse

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Today's dialect: one command per Redis pub/sub message, `NAME rest`, no
// trailing newline. Synapse's processes publish every command as
// "NAME" + " " + args, so a command without arguments (REPLICATE) goes out
// with a trailing space. The argument layouts follow Synapse's
// synapse/replication/tcp/commands.py; see docs/synapse.md.

// Wire names of the commands of today's dialect.
const (
	NameRData          = "RDATA"
	NamePosition       = "POSITION"
	NameReplicate      = "REPLICATE"
	NameUserSync       = "USER_SYNC"
	NameClearUserSync  = "CLEAR_USER_SYNC"
	NameFederationAck  = "FEDERATION_ACK"
	NameUserIP         = "USER_IP"
	NameRemoteServerUp = "REMOTE_SERVER_UP"
	NameLockReleased   = "LOCK_RELEASED"
	NameNewActiveTask  = "NEW_ACTIVE_TASK"
	NameCancelTask     = "CANCEL_TASK"
)

// batchToken is the RDATA token of every row of one stream id but the last.
const batchToken = "batch"

// Parse errors. A message that fails to parse is skipped and counted by the
// watcher; these say why.
var (
	// ErrBlankMessage: the message is empty or only spaces; Synapse ignores
	// such messages and so does the watcher (not counted as malformed).
	ErrBlankMessage = errors.New("blank message")
	// ErrUnknownCommand: the command name is not one of today's dialect. New
	// commands keep arriving in Synapse releases, so this is never fatal.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrMalformed: a known command whose arguments do not match its format.
	ErrMalformed = errors.New("malformed command")
)

// Command is one parsed command of today's dialect.
type Command interface {
	// Name is the command's wire name, e.g. "RDATA".
	Name() string
	// appendArgs appends the command's arguments (everything after
	// "NAME ") in wire form.
	appendArgs(b []byte) []byte
}

// RData is `RDATA <stream> <instance> <token|batch> <row_json>`: one row of
// a stream, written by instance.
type RData struct {
	Stream   string
	Instance string
	// Batch is true for the token "batch": more rows with the same stream
	// id follow; Token is then 0.
	Batch bool
	Token int64
	// Row is the row's JSON text, kept opaque: row shapes differ between
	// Synapse releases.
	Row string
}

// Position is `POSITION <stream> <instance> <prev_token> <new_token>`:
// instance's position on stream moved from PrevToken to NewToken with no
// rows in between that others need to see.
type Position struct {
	Stream    string
	Instance  string
	PrevToken int64
	NewToken  int64
}

// Replicate is `REPLICATE`: every process answers it by announcing POSITION
// for every stream it writes. It carries no arguments (anything after the
// name is ignored, as Synapse does).
type Replicate struct{}

// UserSync is `USER_SYNC <instance_id> <user_id> <device_id|None>
// <start|end> <last_sync_ms>`.
type UserSync struct {
	InstanceID string
	UserID     string
	// DeviceID is empty when the wire says None.
	DeviceID   string
	Syncing    bool
	LastSyncMS int64
}

// ClearUserSync is `CLEAR_USER_SYNC <instance_id>`.
type ClearUserSync struct {
	InstanceID string
}

// FederationAck is `FEDERATION_ACK <instance_name> <token>`.
type FederationAck struct {
	Instance string
	Token    int64
}

// UserIP is `USER_IP <user_id> <json>`, published on `<server_name>/USER_IP`.
// JSON ([access_token, ip, user_agent, device_id, last_seen]) is kept opaque:
// the watcher only counts these.
type UserIP struct {
	UserID string
	JSON   string
}

// RemoteServerUp is `REMOTE_SERVER_UP <server>`.
type RemoteServerUp struct {
	Server string
}

// LockReleased is `LOCK_RELEASED <json [instance_name, lock_name, lock_key]>`.
type LockReleased struct {
	Instance string
	LockName string
	LockKey  string
	// raw is the JSON as received, so a parsed command formats back to the
	// same bytes whatever JSON spacing or escaping its sender used.
	raw string
}

// NewActiveTask is `NEW_ACTIVE_TASK <task_id>`.
type NewActiveTask struct {
	TaskID string
}

// CancelTask is `CANCEL_TASK <task_id>` (Synapse 2026).
type CancelTask struct {
	TaskID string
}

// DirectTCP is one of SERVER, PING, NAME and ERROR: commands of the direct
// TCP connection that Synapse's parser still knows but that never travel over
// Redis. They appear in Synapse's documentation examples, so they parse, and
// the watcher counts them under their own name.
type DirectTCP struct {
	Command string
	Data    string
}

// Unknown is a command whose name is not in today's dialect.
type Unknown struct {
	Command string
	Rest    string
}

func (RData) Name() string          { return NameRData }
func (Position) Name() string       { return NamePosition }
func (Replicate) Name() string      { return NameReplicate }
func (UserSync) Name() string       { return NameUserSync }
func (ClearUserSync) Name() string  { return NameClearUserSync }
func (FederationAck) Name() string  { return NameFederationAck }
func (UserIP) Name() string         { return NameUserIP }
func (RemoteServerUp) Name() string { return NameRemoteServerUp }
func (LockReleased) Name() string   { return NameLockReleased }
func (NewActiveTask) Name() string  { return NameNewActiveTask }
func (CancelTask) Name() string     { return NameCancelTask }
func (c DirectTCP) Name() string    { return c.Command }
func (c Unknown) Name() string      { return c.Command }

func (c RData) appendArgs(b []byte) []byte {
	b = append(b, c.Stream...)
	b = append(b, ' ')
	b = append(b, c.Instance...)
	b = append(b, ' ')
	if c.Batch {
		b = append(b, batchToken...)
	} else {
		b = strconv.AppendInt(b, c.Token, 10)
	}
	b = append(b, ' ')
	return append(b, c.Row...)
}

func (c Position) appendArgs(b []byte) []byte {
	b = append(b, c.Stream...)
	b = append(b, ' ')
	b = append(b, c.Instance...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, c.PrevToken, 10)
	b = append(b, ' ')
	return strconv.AppendInt(b, c.NewToken, 10)
}

func (Replicate) appendArgs(b []byte) []byte { return b }

func (c UserSync) appendArgs(b []byte) []byte {
	b = append(b, c.InstanceID...)
	b = append(b, ' ')
	b = append(b, c.UserID...)
	b = append(b, ' ')
	if c.DeviceID == "" {
		b = append(b, "None"...)
	} else {
		b = append(b, c.DeviceID...)
	}
	if c.Syncing {
		b = append(b, " start "...)
	} else {
		b = append(b, " end "...)
	}
	return strconv.AppendInt(b, c.LastSyncMS, 10)
}

func (c ClearUserSync) appendArgs(b []byte) []byte { return append(b, c.InstanceID...) }

func (c FederationAck) appendArgs(b []byte) []byte {
	b = append(b, c.Instance...)
	b = append(b, ' ')
	return strconv.AppendInt(b, c.Token, 10)
}

func (c UserIP) appendArgs(b []byte) []byte {
	b = append(b, c.UserID...)
	b = append(b, ' ')
	return append(b, c.JSON...)
}

func (c RemoteServerUp) appendArgs(b []byte) []byte { return append(b, c.Server...) }

func (c LockReleased) appendArgs(b []byte) []byte {
	if c.raw != "" {
		return append(b, c.raw...)
	}
	// Synapse's encoder is compact; Go's would escape <, > and & which
	// Python's does not.
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	// Encoding three strings cannot fail.
	_ = enc.Encode([]string{c.Instance, c.LockName, c.LockKey})
	return append(b, strings.TrimSuffix(sb.String(), "\n")...)
}

func (c NewActiveTask) appendArgs(b []byte) []byte { return append(b, c.TaskID...) }
func (c CancelTask) appendArgs(b []byte) []byte    { return append(b, c.TaskID...) }
func (c DirectTCP) appendArgs(b []byte) []byte     { return append(b, c.Data...) }
func (c Unknown) appendArgs(b []byte) []byte       { return append(b, c.Rest...) }

// AppendFormat appends c in wire form, exactly as Synapse publishes it:
// "NAME" + " " + arguments, no newline. REPLICATE becomes "REPLICATE ".
func AppendFormat(b []byte, c Command) []byte {
	b = append(b, c.Name()...)
	b = append(b, ' ')
	return c.appendArgs(b)
}

// Format returns c in wire form; see AppendFormat.
func Format(c Command) string { return string(AppendFormat(nil, c)) }

// Parse reads one pub/sub message. It returns ErrBlankMessage for a blank
// message, an Unknown command with ErrUnknownCommand for a name it does not
// know, and an error wrapping ErrMalformed when a known command's arguments
// do not match its format. Strings in the result share memory with msg.
func Parse(msg string) (Command, error) {
	if strings.TrimSpace(msg) == "" {
		return nil, ErrBlankMessage
	}
	if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
		return nil, fmt.Errorf("%w: newline at byte %d (one command per message, no newline)", ErrMalformed, i)
	}
	name, rest, _ := strings.Cut(msg, " ")
	switch name {
	case NameRData:
		return parseRData(rest)
	case NamePosition:
		return parsePosition(rest)
	case NameReplicate:
		return Replicate{}, nil
	case NameUserSync:
		return parseUserSync(rest)
	case NameClearUserSync:
		if rest == "" {
			return nil, malformed(name, "want CLEAR_USER_SYNC <instance_id>")
		}
		return ClearUserSync{InstanceID: rest}, nil
	case NameFederationAck:
		return parseFederationAck(rest)
	case NameUserIP:
		user, js, ok := strings.Cut(rest, " ")
		if !ok || user == "" || js == "" {
			return nil, malformed(name, "want USER_IP <user_id> <json>")
		}
		return UserIP{UserID: user, JSON: js}, nil
	case NameRemoteServerUp:
		if rest == "" {
			return nil, malformed(name, "want REMOTE_SERVER_UP <server>")
		}
		return RemoteServerUp{Server: rest}, nil
	case NameLockReleased:
		return parseLockReleased(rest)
	case NameNewActiveTask:
		if rest == "" {
			return nil, malformed(name, "want NEW_ACTIVE_TASK <task_id>")
		}
		return NewActiveTask{TaskID: rest}, nil
	case NameCancelTask:
		if rest == "" {
			return nil, malformed(name, "want CANCEL_TASK <task_id>")
		}
		return CancelTask{TaskID: rest}, nil
	case "SERVER", "PING", "NAME", "ERROR":
		return DirectTCP{Command: name, Data: rest}, nil
	}
	return Unknown{Command: name, Rest: rest}, fmt.Errorf("%w %q", ErrUnknownCommand, truncate(name, 64))
}

func parseRData(rest string) (Command, error) {
	const want = "want RDATA <stream> <instance> <token|batch> <row_json>"
	stream, instance, token, row, ok := splitFour(rest)
	if !ok || row == "" {
		return nil, malformed(NameRData, want)
	}
	if err := checkNames(NameRData, stream, instance); err != nil {
		return nil, err
	}
	c := RData{Stream: stream, Instance: instance, Row: row}
	if token == batchToken {
		c.Batch = true
		return c, nil
	}
	n, err := parseToken(NameRData, "token", token)
	if err != nil {
		return nil, err
	}
	c.Token = n
	return c, nil
}

func parsePosition(rest string) (Command, error) {
	const want = "want POSITION <stream> <instance> <prev_token> <new_token>"
	stream, instance, prev, next, ok := splitFour(rest)
	if !ok || strings.Contains(next, " ") {
		return nil, malformed(NamePosition, want)
	}
	if err := checkNames(NamePosition, stream, instance); err != nil {
		return nil, err
	}
	p, err := parseToken(NamePosition, "prev_token", prev)
	if err != nil {
		return nil, err
	}
	n, err := parseToken(NamePosition, "new_token", next)
	if err != nil {
		return nil, err
	}
	return Position{Stream: stream, Instance: instance, PrevToken: p, NewToken: n}, nil
}

func parseUserSync(rest string) (Command, error) {
	const want = "want USER_SYNC <instance_id> <user_id> <device_id|None> <start|end> <last_sync_ms>"
	instance, rest, ok1 := strings.Cut(rest, " ")
	user, rest, ok2 := strings.Cut(rest, " ")
	device, rest, ok3 := strings.Cut(rest, " ")
	state, last, ok4 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !ok3 || !ok4 || instance == "" || user == "" || device == "" {
		return nil, malformed(NameUserSync, want)
	}
	if state != "start" && state != "end" {
		return nil, malformed(NameUserSync, fmt.Sprintf("state %q is neither start nor end", truncate(state, 32)))
	}
	ms, err := parseToken(NameUserSync, "last_sync_ms", last)
	if err != nil {
		return nil, err
	}
	if device == "None" {
		device = ""
	}
	return UserSync{InstanceID: instance, UserID: user, DeviceID: device, Syncing: state == "start", LastSyncMS: ms}, nil
}

func parseFederationAck(rest string) (Command, error) {
	instance, token, ok := strings.Cut(rest, " ")
	if !ok || instance == "" || strings.Contains(token, " ") {
		return nil, malformed(NameFederationAck, "want FEDERATION_ACK <instance_name> <token>")
	}
	n, err := parseToken(NameFederationAck, "token", token)
	if err != nil {
		return nil, err
	}
	return FederationAck{Instance: instance, Token: n}, nil
}

func parseLockReleased(rest string) (Command, error) {
	var fields []string
	if err := json.Unmarshal([]byte(rest), &fields); err != nil || len(fields) != 3 {
		return nil, malformed(NameLockReleased, `want LOCK_RELEASED ["<instance_name>","<lock_name>","<lock_key>"]`)
	}
	return LockReleased{Instance: fields[0], LockName: fields[1], LockKey: fields[2], raw: rest}, nil
}

// splitFour splits s on its first three spaces, as Synapse's
// `line.split(" ", 3)`: the fourth part may contain spaces.
func splitFour(s string) (a, b, c, d string, ok bool) {
	a, s, ok1 := strings.Cut(s, " ")
	b, s, ok2 := strings.Cut(s, " ")
	c, d, ok3 := strings.Cut(s, " ")
	return a, b, c, d, ok1 && ok2 && ok3
}

// checkNames refuses empty or non-UTF-8 stream and instance names: they
// become map keys and table cells.
func checkNames(cmd, stream, instance string) error {
	if stream == "" || instance == "" {
		return malformed(cmd, "empty stream or instance name")
	}
	if !utf8.ValidString(stream) || !utf8.ValidString(instance) {
		return malformed(cmd, "stream or instance name is not UTF-8")
	}
	return nil
}

// parseToken reads a stream token; Synapse's int() takes an optional sign
// and decimal digits.
func parseToken(cmd, field, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, malformed(cmd, fmt.Sprintf("%s %q is not an integer", field, truncate(s, 32)))
	}
	return n, nil
}

func malformed(cmd, why string) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, cmd, why)
}

// truncate shortens s for error messages and logs, so a hostile 1 MiB
// message never ends up whole in a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("...(%d bytes)", len(s))
}
