// Package rows is the master's stream catalogue: which streams it serves
// (the standard streams of the 2020 Synapse protocol plus custom ones) and
// the shape each stream's rows must have. Validate is the gate every
// published row passes before it is stored, so its errors are written for
// the publisher: they name the stream, the field and what was expected.
package rows

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"unicode/utf8"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
	"github.com/tcprepl/tcprepl/internal/replication"
	"github.com/tcprepl/tcprepl/internal/replication/streams"
)

// Type is a set of JSON types a field accepts.
type Type uint8

// JSON types. A field's Type is the union of the types it accepts.
const (
	String Type = 1 << iota
	// Int is a JSON number without fraction or exponent that fits in an
	// int64 (ids, millisecond timestamps).
	Int
	Bool
	List
	Object
	Null

	// Any accepts every JSON value.
	Any = String | Int | Bool | List | Object | Null | number
	// number is a non-integer number; only Any accepts it.
	number Type = 1 << 7
)

// Field is one position of a row.
type Field struct {
	Name  string
	Types Type
	// Elem, when set on a List field, is the type every element must have.
	Elem Type
}

// The events stream's row is [kind, data]; these are the data shapes.
const (
	EventKindEvent = "ev"
	EventKindState = "state"
)

// Stream names of the 2020 protocol, in docs/protocol.md's order (the list is
// internal/replication/streams).
const (
	StreamEvents         = streams.Events
	StreamBackfill       = streams.Backfill
	StreamPresence       = streams.Presence
	StreamTyping         = streams.Typing
	StreamReceipts       = streams.Receipts
	StreamPushRules      = streams.PushRules
	StreamPushers        = streams.Pushers
	StreamCaches         = streams.Caches
	StreamPublicRooms    = streams.PublicRooms
	StreamDeviceLists    = streams.DeviceLists
	StreamToDevice       = streams.ToDevice
	StreamFederation     = streams.Federation
	StreamTagAccountData = streams.TagAccountData
	StreamAccountData    = streams.AccountData
	StreamGroups         = streams.Groups
	StreamUserSignature  = streams.UserSignature
)

func str(name string) Field          { return Field{Name: name, Types: String} }
func optStr(name string) Field       { return Field{Name: name, Types: String | Null} }
func integer(name string) Field      { return Field{Name: name, Types: Int} }
func boolean(name string) Field      { return Field{Name: name, Types: Bool} }
func object(name string) Field       { return Field{Name: name, Types: Object} }
func list(name string, e Type) Field { return Field{Name: name, Types: List, Elem: e} }

// eventFields are the data of an "ev" events row and the fields of a
// backfill row: the same event, described the same way.
var eventFields = []Field{
	str("event_id"), str("room_id"), str("type"),
	optStr("state_key"), optStr("redacts"), optStr("relates_to"),
}

var stateFields = []Field{str("room_id"), str("type"), str("state_key"), optStr("event_id")}

var eventsFields = []Field{str("type"), {Name: "data", Types: List}}

// standard lists the standard streams' row fields, in docs/protocol.md's order.
// Types follow docs/protocol.md where it gives them and Synapse 1.8-1.12's row
// tuples otherwise; fields Synapse filled with None are nullable.
var standard = []struct {
	name   string
	fields []Field
}{
	{StreamEvents, eventsFields},
	{StreamBackfill, eventFields},
	{StreamPresence, []Field{
		str("user_id"), str("state"),
		integer("last_active_ts"), integer("last_federation_update_ts"), integer("last_user_sync_ts"),
		optStr("status_msg"), boolean("currently_active"),
	}},
	{StreamTyping, []Field{str("room_id"), list("user_ids", String)}},
	{StreamReceipts, []Field{str("room_id"), str("receipt_type"), str("user_id"), str("event_id"), object("data")}},
	{StreamPushRules, []Field{str("user_id")}},
	{StreamPushers, []Field{str("user_id"), str("app_id"), str("pushkey"), boolean("deleted")}},
	// keys is None when a whole cache is invalidated.
	{StreamCaches, []Field{str("cache_func"), {Name: "keys", Types: List | Null}, integer("invalidation_ts")}},
	// visibility was a string in the row tuple but a boolean column in the
	// table it was read from; Synapse put either on the wire.
	{StreamPublicRooms, []Field{str("room_id"), {Name: "visibility", Types: String | Bool}, optStr("appservice_id"), optStr("network_id")}},
	{StreamDeviceLists, []Field{str("user_id"), optStr("destination")}},
	{StreamToDevice, []Field{str("entity")}},
	{StreamFederation, []Field{str("type"), object("data")}},
	{StreamTagAccountData, []Field{str("user_id"), str("room_id"), object("data")}},
	// room_id is None for global account data.
	{StreamAccountData, []Field{str("user_id"), optStr("room_id"), str("data_type")}},
	{StreamGroups, []Field{str("group_id"), str("user_id"), str("type"), object("content")}},
	{StreamUserSignature, []Field{str("user_id")}},
}

// StandardStreams returns the standard stream names in docs/protocol.md's order;
// federation only when the master publishes it.
func StandardStreams(federation bool) []string {
	out := make([]string, 0, len(standard))
	for _, s := range standard {
		if s.name == StreamFederation && !federation {
			continue
		}
		out = append(out, s.name)
	}
	return out
}

// IsStandard reports whether name is a standard stream (federation included).
func IsStandard(name string) bool {
	for _, s := range standard {
		if s.name == name {
			return true
		}
	}
	return false
}

// MaxNameLength bounds custom stream names: they travel in every RDATA line
// and in metric labels.
const MaxNameLength = 64

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ValidateName checks a custom stream name: [a-z][a-z0-9_]*, at most
// MaxNameLength bytes, and not a standard stream's name.
func ValidateName(name string) error {
	switch {
	case !nameRE.MatchString(name):
		return fmt.Errorf("stream name %q: use lower-case letters, digits and underscores, starting with a letter ([a-z][a-z0-9_]*)", name)
	case len(name) > MaxNameLength:
		return fmt.Errorf("stream name %q: longer than %d bytes; choose a shorter name", name, MaxNameLength)
	case IsStandard(name):
		return fmt.Errorf("stream name %q is a standard stream; a custom stream needs a name of its own", name)
	}
	return nil
}

// Custom declares a custom stream.
type Custom struct {
	Name string
	// Fields, when positive, is the number of fields every row must have.
	// Zero accepts any JSON array.
	Fields int
}

// Catalogue is the set of streams one master serves and their row shapes.
// It is immutable and safe for concurrent use.
type Catalogue struct {
	order  []string
	shapes map[string]*shape
}

type shape struct {
	name   string
	fields []Field // nil for a custom stream without a declared count
	count  int     // required field count; 0 = any
	events bool    // the events stream's two row kinds
}

// NewCatalogue builds the catalogue: the standard streams (federation only
// when enabled) then the custom ones in the order given.
func NewCatalogue(federation bool, custom []Custom) (*Catalogue, error) {
	c := &Catalogue{shapes: make(map[string]*shape, len(standard)+len(custom))}
	for _, s := range standard {
		if s.name == StreamFederation && !federation {
			continue
		}
		c.add(&shape{name: s.name, fields: s.fields, count: len(s.fields), events: s.name == StreamEvents})
	}
	for _, cs := range custom {
		if err := ValidateName(cs.Name); err != nil {
			return nil, fmt.Errorf("custom stream: %w", err)
		}
		if _, dup := c.shapes[cs.Name]; dup {
			return nil, fmt.Errorf("custom stream %q is declared twice; declare each stream once", cs.Name)
		}
		if cs.Fields < 0 {
			return nil, fmt.Errorf("custom stream %q: field count %d; use a positive count, or 0 for any array", cs.Name, cs.Fields)
		}
		c.add(&shape{name: cs.Name, count: cs.Fields})
	}
	return c, nil
}

func (c *Catalogue) add(s *shape) {
	c.order = append(c.order, s.name)
	c.shapes[s.name] = s
}

// Streams returns the served stream names: standard ones first, in
// docs/protocol.md's order, then custom ones as declared.
func (c *Catalogue) Streams() []string { return slices.Clone(c.order) }

// Has reports whether the catalogue serves stream.
func (c *Catalogue) Has(stream string) bool {
	_, ok := c.shapes[stream]
	return ok
}

// Fields returns the named fields of a stream's rows (for documentation and
// the API); nil for a custom stream, whose fields have no names.
func (c *Catalogue) Fields(stream string) ([]Field, error) {
	s, ok := c.shapes[stream]
	if !ok {
		return nil, unknownStream(stream)
	}
	return slices.Clone(s.fields), nil
}

func unknownStream(stream string) error {
	return fmt.Errorf("stream %q: %w", stream, replication.ErrUnknownStream)
}

// Validate checks one row of stream. A row the master would store and send
// as is passes; anything else gives an error that names the stream and the
// offending field: a *RowError, or one wrapping replication.ErrUnknownStream.
func (c *Catalogue) Validate(stream string, row json.RawMessage) error {
	s, ok := c.shapes[stream]
	if !ok {
		return unknownStream(stream)
	}
	var arr [16][]byte
	fields, res := jsonscan.SplitArray(row, arr[:0])
	switch res {
	case jsonscan.NotJSON:
		// encoding/json would let invalid UTF-8 through (substituting
		// U+FFFD on decode); the wire is UTF-8, so it is refused too.
		if !utf8.Valid(row) {
			return &RowError{Stream: s.name, Msg: "not valid UTF-8; rows are UTF-8 JSON"}
		}
		return &RowError{Stream: s.name, Msg: "not valid JSON; a row is a JSON array"}
	case jsonscan.TooDeep:
		return &RowError{Stream: s.name, Msg: fmt.Sprintf("nested deeper than %d levels", jsonscan.MaxDepth)}
	case jsonscan.NotArray:
		return &RowError{Stream: s.name, Msg: "expected a JSON array, got " + preview(trimSpace(row))}
	}
	return s.validate(fields)
}

// ValidateFields is Validate for a row already checked as JSON and split
// into its fields: row must be valid JSON (the master's rows have been
// re-encoded, which validates them) and fields its elements, as
// jsonscan.AppendElements gives them; a row that is not an array is refused
// whatever fields says. The publish path splits rows while it cuts them out
// of the request, so this saves a pass over each row.
func (c *Catalogue) ValidateFields(stream string, row json.RawMessage, fields [][]byte) error {
	s, ok := c.shapes[stream]
	if !ok {
		return unknownStream(stream)
	}
	if r := trimSpace(row); len(r) == 0 || r[0] != '[' {
		return &RowError{Stream: s.name, Msg: "expected a JSON array, got " + preview(r)}
	}
	return s.validate(fields)
}

// validate checks the fields of a row against the stream's shape.
func (s *shape) validate(vals [][]byte) error {
	if s.count > 0 && len(vals) != s.count {
		return &RowError{Stream: s.name, Msg: countMsg(s.fields, s.count, len(vals))}
	}
	if s.fields == nil {
		return nil
	}
	if err := checkFields(s.name, "", s.fields, vals); err != nil {
		return err
	}
	if s.events {
		return validateEventData(s.name, vals)
	}
	return nil
}

// validateEventData checks the data of an events row by its kind.
func validateEventData(stream string, vals [][]byte) error {
	// The kind is nearly always written plainly; decode only otherwise
	// (escapes such as "\u0065v").
	var kind string
	switch string(vals[0]) { // no allocation: compared in place
	case `"` + EventKindEvent + `"`:
		kind = EventKindEvent
	case `"` + EventKindState + `"`:
		kind = EventKindState
	default:
		// A separate variable: taking kind's address would move it to
		// the heap on the common path too.
		var decoded string
		if err := json.Unmarshal(vals[0], &decoded); err != nil {
			return &RowError{Stream: stream, Field: 1, Name: "type", Msg: "expected a string"}
		}
		kind = decoded
	}
	var fields []Field
	var scope string
	switch kind {
	case EventKindEvent:
		fields, scope = eventFields, `"ev" data`
	case EventKindState:
		fields, scope = stateFields, `"state" data`
	default:
		return &RowError{Stream: stream, Field: 1, Name: "type", Msg: fmt.Sprintf(`expected "ev" or "state", got %s`, preview(vals[0]))}
	}
	var arr [8][]byte
	data, _ := jsonscan.AppendElements(vals[1], arr[:0]) // checkFields made sure it is a list
	if len(data) != len(fields) {
		return &RowError{Stream: stream, Scope: scope, Msg: countMsg(fields, len(fields), len(data))}
	}
	return checkFields(stream, scope, fields, data)
}

func checkFields(stream, scope string, fields []Field, vals [][]byte) error {
	for i, f := range fields {
		v := vals[i]
		t := typeOf(v)
		if t&f.Types == 0 {
			return &RowError{Stream: stream, Scope: scope, Field: i + 1, Name: f.Name, Msg: "expected " + describe(f.Types) + ", got " + preview(v)}
		}
		if t == List && f.Elem != 0 {
			var arr [16][]byte
			elems, _ := jsonscan.AppendElements(v, arr[:0])
			for j, e := range elems {
				if typeOf(e)&f.Elem == 0 {
					return &RowError{Stream: stream, Scope: scope, Field: i + 1, Name: f.Name,
						Msg: fmt.Sprintf("element %d: expected %s, got %s", j+1, describe(f.Elem), preview(e))}
				}
			}
		}
	}
	return nil
}

func countMsg(fields []Field, want, got int) string {
	if fields == nil {
		return fmt.Sprintf("expected %d fields, got %d", want, got)
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	return fmt.Sprintf("expected %d fields %v, got %d", want, names, got)
}

// RowError is a row refused by Validate.
type RowError struct {
	Stream string
	// Scope narrows where in the row, e.g. `"ev" data` for the data list of
	// an events row; empty for the row itself.
	Scope string
	// Field is the 1-based position of the offending field, 0 for the row
	// as a whole; Name is its name from docs/protocol.md.
	Field int
	Name  string
	Msg   string
}

func (e *RowError) Error() string {
	where := e.Stream + " row"
	if e.Scope != "" {
		where += " " + e.Scope
	}
	if e.Field == 0 {
		return where + ": " + e.Msg
	}
	return fmt.Sprintf("%s field %d %q: %s", where, e.Field, e.Name, e.Msg)
}
