package rows

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
	"github.com/tcprepl/tcprepl/internal/replication"
)

func testCatalogue(t testing.TB) *Catalogue {
	t.Helper()
	c, err := NewCatalogue(true, []Custom{{Name: "audit"}, {Name: "pairs", Fields: 2}})
	if err != nil {
		t.Fatalf("NewCatalogue: %v", err)
	}
	return c
}

// validRows holds one good row per standard stream (the fuzz seeds too).
var validRows = map[string]string{
	StreamEvents:         `["ev", ["$e:x", "!r:x", "m.room.message", null, null, null]]`,
	StreamBackfill:       `["$e:x", "!r:x", "m.room.member", "@u:x", null, "$p:x"]`,
	StreamPresence:       `["@u:x", "online", 1490197670513, 0, 1490197670513, null, true]`,
	StreamTyping:         `["!r:x", ["@a:x", "@b:x"]]`,
	StreamReceipts:       `["!r:x", "m.read", "@u:x", "$e:x", {"ts": 1}]`,
	StreamPushRules:      `["@u:x"]`,
	StreamPushers:        `["@u:x", "m.http", "key", false]`,
	StreamCaches:         `["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`,
	StreamPublicRooms:    `["!r:x", "public", null, null]`,
	StreamDeviceLists:    `["@u:x", "remote.example"]`,
	StreamToDevice:       `["@u:x"]`,
	StreamFederation:     `["edu", {"edu_type": "m.typing"}]`,
	StreamTagAccountData: `["@u:x", "!r:x", {"tags": {}}]`,
	StreamAccountData:    `["@u:x", null, "m.push_rules"]`,
	StreamGroups:         `["+g:x", "@u:x", "invite", {}]`,
	StreamUserSignature:  `["@u:x"]`,
}

func TestValidate(t *testing.T) {
	c := testCatalogue(t)
	tests := map[string]struct {
		stream  string
		row     string
		wantErr string // "" means valid; else the exact message
	}{
		// Every standard stream accepts its good row (checked below too).
		"events ev":                     {stream: "events", row: validRows[StreamEvents]},
		"events ev state event":         {stream: "events", row: `["ev", ["$e", "!r", "m.room.name", "", null, null]]`},
		"events ev redaction":           {stream: "events", row: `["ev", ["$e", "!r", "m.room.redaction", null, "$x", null]]`},
		"events state":                  {stream: "events", row: `["state", ["!r", "m.room.name", "", "$e"]]`},
		"events state removed":          {stream: "events", row: `["state", ["!r", "m.room.name", "", null]]`},
		"events whitespace and escapes": {stream: "events", row: " [ \"\\u0065v\" ,\n[\"$e\",\"!r\",\"t\",null,null,null] ] "},
		"events unknown kind":           {stream: "events", row: `["evt", []]`, wantErr: `events row field 1 "type": expected "ev" or "state", got "evt"`},
		"events kind not a string":      {stream: "events", row: `[1, []]`, wantErr: `events row field 1 "type": expected a string, got 1`},
		"events data not a list":        {stream: "events", row: `["ev", {}]`, wantErr: `events row field 2 "data": expected a list, got {}`},
		"events ev short":               {stream: "events", row: `["ev", ["$e", "!r", "t", null, null]]`, wantErr: `events row "ev" data: expected 6 fields [event_id room_id type state_key redacts relates_to], got 5`},
		"events ev state data":          {stream: "events", row: `["ev", ["!r", "m.room.name", "", "$e"]]`, wantErr: `events row "ev" data: expected 6 fields [event_id room_id type state_key redacts relates_to], got 4`},
		"events state with ev data":     {stream: "events", row: `["state", ["$e", "!r", "t", null, null, null]]`, wantErr: `events row "state" data: expected 4 fields [room_id type state_key event_id], got 6`},
		"events ev bad event_id":        {stream: "events", row: `["ev", [null, "!r", "t", null, null, null]]`, wantErr: `events row "ev" data field 1 "event_id": expected a string, got null`},
		"events ev bad state_key":       {stream: "events", row: `["ev", ["$e", "!r", "t", 5, null, null]]`, wantErr: `events row "ev" data field 4 "state_key": expected a string or null, got 5`},
		"events ev bad relates_to":      {stream: "events", row: `["ev", ["$e", "!r", "t", null, null, {}]]`, wantErr: `events row "ev" data field 6 "relates_to": expected a string or null, got {}`},
		"events state null state_key":   {stream: "events", row: `["state", ["!r", "t", null, "$e"]]`, wantErr: `events row "state" data field 3 "state_key": expected a string, got null`},
		"events flat 2019 row":          {stream: "events", row: `["$e", "!r", "t", null, null, null]`, wantErr: `events row: expected 2 fields [type data], got 6`},

		"backfill":               {stream: "backfill", row: validRows[StreamBackfill]},
		"backfill bad room_id":   {stream: "backfill", row: `["$e", 1, "t", null, null, null]`, wantErr: `backfill row field 2 "room_id": expected a string, got 1`},
		"backfill missing field": {stream: "backfill", row: `["$e", "!r", "t", null, null]`, wantErr: `backfill row: expected 6 fields [event_id room_id type state_key redacts relates_to], got 5`},

		"presence":                      {stream: "presence", row: validRows[StreamPresence]},
		"presence status message":       {stream: "presence", row: `["@u", "unavailable", 1, 2, 3, "away", false]`},
		"presence negative ts":          {stream: "presence", row: `["@u", "offline", -1, 0, 0, null, false]`},
		"presence float ts":             {stream: "presence", row: `["@u", "online", 1.5, 0, 0, null, true]`, wantErr: `presence row field 3 "last_active_ts": expected an integer, got 1.5`},
		"presence exponent ts":          {stream: "presence", row: `["@u", "online", 1, 1e3, 0, null, true]`, wantErr: `presence row field 4 "last_federation_update_ts": expected an integer, got 1e3`},
		"presence ts beyond int64":      {stream: "presence", row: `["@u", "online", 1, 0, 99999999999999999999, null, true]`, wantErr: `presence row field 5 "last_user_sync_ts": expected an integer, got 99999999999999999999`},
		"presence ts as string":         {stream: "presence", row: `["@u", "online", "1", 0, 0, null, true]`, wantErr: `presence row field 3 "last_active_ts": expected an integer, got "1"`},
		"presence currently_active int": {stream: "presence", row: `["@u", "online", 1, 0, 0, null, 1]`, wantErr: `presence row field 7 "currently_active": expected a boolean, got 1`},
		"presence status_msg list":      {stream: "presence", row: `["@u", "online", 1, 0, 0, [], true]`, wantErr: `presence row field 6 "status_msg": expected a string or null, got []`},

		"typing":                {stream: "typing", row: validRows[StreamTyping]},
		"typing nobody":         {stream: "typing", row: `["!r", []]`},
		"typing user_ids null":  {stream: "typing", row: `["!r", null]`, wantErr: `typing row field 2 "user_ids": expected a list, got null`},
		"typing user_ids ints":  {stream: "typing", row: `["!r", ["@a", 7]]`, wantErr: `typing row field 2 "user_ids": element 2: expected a string, got 7`},
		"typing user_ids comma": {stream: "typing", row: `["!r", ["@a,\"]", "@b"]]`},

		"receipts":             {stream: "receipts", row: validRows[StreamReceipts]},
		"receipts data list":   {stream: "receipts", row: `["!r", "m.read", "@u", "$e", []]`, wantErr: `receipts row field 5 "data": expected an object, got []`},
		"receipts data absent": {stream: "receipts", row: `["!r", "m.read", "@u", "$e"]`, wantErr: `receipts row: expected 5 fields [room_id receipt_type user_id event_id data], got 4`},

		"push_rules":         {stream: "push_rules", row: validRows[StreamPushRules]},
		"push_rules number":  {stream: "push_rules", row: `[12]`, wantErr: `push_rules row field 1 "user_id": expected a string, got 12`},
		"push_rules too big": {stream: "push_rules", row: `["@u", "@v"]`, wantErr: `push_rules row: expected 1 fields [user_id], got 2`},

		"pushers":              {stream: "pushers", row: validRows[StreamPushers]},
		"pushers deleted":      {stream: "pushers", row: `["@u", "m.http", "key", true]`},
		"pushers deleted yes":  {stream: "pushers", row: `["@u", "m.http", "key", "yes"]`, wantErr: `pushers row field 4 "deleted": expected a boolean, got "yes"`},
		"pushers deleted null": {stream: "pushers", row: `["@u", "m.http", "key", null]`, wantErr: `pushers row field 4 "deleted": expected a boolean, got null`},

		"caches":                {stream: "caches", row: validRows[StreamCaches]},
		"caches keys null":      {stream: "caches", row: `["get_user_by_id", null, 1]`},
		"caches mixed keys":     {stream: "caches", row: `["f", ["a", 1, null, [2]], 1]`},
		"caches keys string":    {stream: "caches", row: `["f", "a", 1]`, wantErr: `caches row field 2 "keys": expected a list or null, got "a"`},
		"caches ts missing":     {stream: "caches", row: `["f", []]`, wantErr: `caches row: expected 3 fields [cache_func keys invalidation_ts], got 2`},
		"caches ts null":        {stream: "caches", row: `["f", [], null]`, wantErr: `caches row field 3 "invalidation_ts": expected an integer, got null`},
		"caches long got value": {stream: "caches", row: `["f", "` + strings.Repeat("x", 100) + `", 1]`, wantErr: `caches row field 2 "keys": expected a list or null, got "` + strings.Repeat("x", 39) + `...`},

		"public_rooms":                 {stream: "public_rooms", row: validRows[StreamPublicRooms]},
		"public_rooms bool visibility": {stream: "public_rooms", row: `["!r", true, "as", "net"]`},
		"public_rooms null visibility": {stream: "public_rooms", row: `["!r", null, null, null]`, wantErr: `public_rooms row field 2 "visibility": expected a string or a boolean, got null`},
		"public_rooms bad network":     {stream: "public_rooms", row: `["!r", "public", null, 3]`, wantErr: `public_rooms row field 4 "network_id": expected a string or null, got 3`},

		"device_lists":                  {stream: "device_lists", row: validRows[StreamDeviceLists]},
		"device_lists local":            {stream: "device_lists", row: `["@u", null]`},
		"device_lists destination bool": {stream: "device_lists", row: `["@u", false]`, wantErr: `device_lists row field 2 "destination": expected a string or null, got false`},

		"to_device":        {stream: "to_device", row: validRows[StreamToDevice]},
		"to_device object": {stream: "to_device", row: `[{}]`, wantErr: `to_device row field 1 "entity": expected a string, got {}`},

		"federation":           {stream: "federation", row: validRows[StreamFederation]},
		"federation data null": {stream: "federation", row: `["edu", null]`, wantErr: `federation row field 2 "data": expected an object, got null`},

		"tag_account_data":         {stream: "tag_account_data", row: validRows[StreamTagAccountData]},
		"tag_account_data no room": {stream: "tag_account_data", row: `["@u", null, {}]`, wantErr: `tag_account_data row field 2 "room_id": expected a string, got null`},

		"account_data":          {stream: "account_data", row: validRows[StreamAccountData]},
		"account_data room":     {stream: "account_data", row: `["@u", "!r", "m.tag"]`},
		"account_data no type":  {stream: "account_data", row: `["@u", null, null]`, wantErr: `account_data row field 3 "data_type": expected a string, got null`},
		"groups":                {stream: "groups", row: validRows[StreamGroups]},
		"groups content string": {stream: "groups", row: `["+g", "@u", "invite", "{}"]`, wantErr: `groups row field 4 "content": expected an object, got "{}"`},
		"user_signature":        {stream: "user_signature", row: validRows[StreamUserSignature]},
		"user_signature empty":  {stream: "user_signature", row: `[]`, wantErr: `user_signature row: expected 1 fields [user_id], got 0`},

		// Whole-row failures.
		"not JSON":         {stream: "pushers", row: `["@u", `, wantErr: `pushers row: not valid JSON; a row is a JSON array`},
		"empty":            {stream: "pushers", row: ``, wantErr: `pushers row: not valid JSON; a row is a JSON array`},
		"object row":       {stream: "pushers", row: `{"user_id": "@u"}`, wantErr: `pushers row: expected a JSON array, got {"user_id": "@u"}`},
		"string row":       {stream: "audit", row: ` "x" `, wantErr: `audit row: expected a JSON array, got "x"`},
		"trailing data":    {stream: "pushers", row: `["@u", "a", "k", true] []`, wantErr: `pushers row: not valid JSON; a row is a JSON array`},
		"invalid UTF-8":    {stream: "push_rules", row: "[\"\xff\"]", wantErr: `push_rules row: not valid UTF-8; rows are UTF-8 JSON`},
		"unknown stream":   {stream: "nope", row: `[]`, wantErr: `stream "nope": unknown stream`},
		"custom any":       {stream: "audit", row: `[1, "two", {"three": [3]}, null, 1.5]`},
		"too deep":         {stream: "audit", row: strings.Repeat("[", jsonscan.MaxDepth+1) + strings.Repeat("]", jsonscan.MaxDepth+1), wantErr: "audit row: nested deeper than 1000 levels"},
		"deep enough":      {stream: "audit", row: strings.Repeat("[", jsonscan.MaxDepth) + strings.Repeat("]", jsonscan.MaxDepth)},
		"ts 19 digits":     {stream: "caches", row: `["f", [], 1234567890123456789]`},
		"ts -19 digits":    {stream: "caches", row: `["f", [], -1234567890123456789]`},
		"ts minus only":    {stream: "caches", row: `["f", [], -]`, wantErr: "caches row: not valid JSON; a row is a JSON array"},
		"control char":     {stream: "push_rules", row: "[\"a\tb\"]", wantErr: "push_rules row: not valid JSON; a row is a JSON array"},
		"bad escape":       {stream: "push_rules", row: `["a\xb"]`, wantErr: "push_rules row: not valid JSON; a row is a JSON array"},
		"unicode escapes":  {stream: "push_rules", row: `["\u00e9\ud83d\ude00\/"]`},
		"raw UTF-8":        {stream: "push_rules", row: `["été 😀"]`},
		"custom empty":     {stream: "audit", row: `[]`},
		"custom counted":   {stream: "pairs", row: `[1, {}]`},
		"custom count off": {stream: "pairs", row: `[1, 2, 3]`, wantErr: `pairs row: expected 2 fields, got 3`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := c.Validate(tc.stream, json.RawMessage(tc.row))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate(%s, %s) = %v, want nil", tc.stream, tc.row, err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate(%s, %s) = nil, want %q", tc.stream, tc.row, tc.wantErr)
			case tc.wantErr != "" && err.Error() != tc.wantErr:
				t.Fatalf("Validate(%s, %s)\n got %q\nwant %q", tc.stream, tc.row, err, tc.wantErr)
			}
		})
	}
}

func TestValidateErrorTypes(t *testing.T) {
	c := testCatalogue(t)
	err := c.Validate("pushers", json.RawMessage(`["@u", "a", "k", "yes"]`))
	var re *RowError
	if !errors.As(err, &re) || re.Stream != "pushers" || re.Field != 4 || re.Name != "deleted" {
		t.Fatalf("error %#v; want a *RowError for pushers field 4 deleted", err)
	}
	if err := c.Validate("nope", json.RawMessage(`[]`)); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("unknown stream error %v does not wrap ErrUnknownStream", err)
	}
}

// TestEveryStandardStreamHasAGoodRow keeps validRows in step with the
// catalogue, so a new stream cannot be added untested.
func TestEveryStandardStreamHasAGoodRow(t *testing.T) {
	c := testCatalogue(t)
	for _, s := range StandardStreams(true) {
		row, ok := validRows[s]
		if !ok {
			t.Errorf("no good row for stream %s in validRows", s)
			continue
		}
		if err := c.Validate(s, json.RawMessage(row)); err != nil {
			t.Errorf("good row of %s refused: %v", s, err)
		}
		// Dropping the last field always breaks a standard row.
		var vals []json.RawMessage
		if err := json.Unmarshal([]byte(row), &vals); err != nil {
			t.Fatal(err)
		}
		short, _ := json.Marshal(vals[:len(vals)-1])
		if err := c.Validate(s, short); err == nil {
			t.Errorf("%s: row without its last field %s accepted", s, short)
		}
	}
}

func TestCatalogueStreams(t *testing.T) {
	want16 := []string{"events", "backfill", "presence", "typing", "receipts", "push_rules", "pushers", "caches",
		"public_rooms", "device_lists", "to_device", "federation", "tag_account_data", "account_data", "groups", "user_signature"}
	if got := StandardStreams(true); !slices.Equal(got, want16) {
		t.Fatalf("StandardStreams(true) = %v", got)
	}
	noFed := slices.DeleteFunc(slices.Clone(want16), func(s string) bool { return s == "federation" })
	if got := StandardStreams(false); !slices.Equal(got, noFed) {
		t.Fatalf("StandardStreams(false) = %v", got)
	}

	c, err := NewCatalogue(false, []Custom{{Name: "zeta"}, {Name: "alpha_2", Fields: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Streams(), append(slices.Clone(noFed), "zeta", "alpha_2"); !slices.Equal(got, want) {
		t.Fatalf("Streams() = %v, want %v", got, want)
	}
	if c.Has("federation") {
		t.Fatal("federation served although disabled")
	}
	if err := c.Validate("federation", json.RawMessage(validRows[StreamFederation])); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("federation row with federation disabled: %v, want unknown stream", err)
	}
	if !c.Has("zeta") || !c.Has("events") {
		t.Fatal("Has misses a served stream")
	}
	fields, err := c.Fields("pushers")
	if err != nil || len(fields) != 4 || fields[3] != (Field{Name: "deleted", Types: Bool}) {
		t.Fatalf("Fields(pushers) = %v, %v", fields, err)
	}
	if f, err := c.Fields("zeta"); err != nil || f != nil {
		t.Fatalf("Fields(zeta) = %v, %v; want nil, nil", f, err)
	}
	if _, err := c.Fields("nope"); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("Fields(nope) = %v", err)
	}
}

func TestNewCatalogueErrors(t *testing.T) {
	tests := map[string]struct {
		custom  []Custom
		wantErr string
	}{
		"upper case":         {custom: []Custom{{Name: "Audit"}}, wantErr: "[a-z][a-z0-9_]*"},
		"leading digit":      {custom: []Custom{{Name: "1abc"}}, wantErr: "[a-z][a-z0-9_]*"},
		"leading _":          {custom: []Custom{{Name: "_abc"}}, wantErr: "[a-z][a-z0-9_]*"},
		"dash":               {custom: []Custom{{Name: "a-b"}}, wantErr: "[a-z][a-z0-9_]*"},
		"empty":              {custom: []Custom{{Name: ""}}, wantErr: "[a-z][a-z0-9_]*"},
		"space":              {custom: []Custom{{Name: "a b"}}, wantErr: "[a-z][a-z0-9_]*"},
		"newline":            {custom: []Custom{{Name: "ab\n"}}, wantErr: "[a-z][a-z0-9_]*"},
		"ALL":                {custom: []Custom{{Name: "ALL"}}, wantErr: "[a-z][a-z0-9_]*"},
		"too long":           {custom: []Custom{{Name: strings.Repeat("a", MaxNameLength+1)}}, wantErr: "longer than 64"},
		"shadows events":     {custom: []Custom{{Name: "events"}}, wantErr: "is a standard stream"},
		"shadows federation": {custom: []Custom{{Name: "federation"}}, wantErr: "is a standard stream"},
		"duplicate":          {custom: []Custom{{Name: "a"}, {Name: "a"}}, wantErr: "declared twice"},
		"negative count":     {custom: []Custom{{Name: "a", Fields: -1}}, wantErr: "field count -1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := NewCatalogue(false, tc.custom)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewCatalogue(%v) = %v, want an error containing %q", tc.custom, err, tc.wantErr)
			}
		})
	}
	if err := ValidateName(strings.Repeat("a", MaxNameLength)); err != nil {
		t.Fatalf("a name of exactly %d bytes: %v", MaxNameLength, err)
	}
}

func TestDescribe(t *testing.T) {
	tests := map[Type]string{
		String:        "a string",
		String | Null: "a string or null",
		Int:           "an integer",
		List | Null:   "a list or null",
		String | Bool: "a string or a boolean",
		Any:           "any JSON value",
	}
	for typ, want := range tests {
		t.Run(want, func(t *testing.T) {
			if got := describe(typ); got != want {
				t.Fatalf("describe(%b) = %q, want %q", typ, got, want)
			}
		})
	}
}

func FuzzValidate(f *testing.F) {
	c, err := NewCatalogue(true, []Custom{{Name: "audit"}, {Name: "pairs", Fields: 2}})
	if err != nil {
		f.Fatal(err)
	}
	streams := c.Streams()
	for i, s := range streams {
		if row, ok := validRows[s]; ok {
			f.Add(uint8(i), []byte(row))
		}
	}
	f.Add(uint8(0), []byte(`["state", ["!r", "t", "", null]]`))
	f.Add(uint8(0), []byte(`["ev", [[[["\"]"]]], {}, 1e5, -0, "\u00e9"]]`))
	f.Add(uint8(3), []byte(`["!r", ["a", "\\", "\"]"]]`))
	f.Fuzz(func(t *testing.T, which uint8, row []byte) {
		stream := streams[int(which)%len(streams)]
		err := c.Validate(stream, row)
		// On valid JSON, the split-first entry of the publish path gives
		// exactly the same verdict.
		if jsonscan.Valid(row) {
			fields, _ := jsonscan.AppendElements(row, nil)
			if ferr := c.ValidateFields(stream, row, fields); fmt.Sprint(ferr) != fmt.Sprint(err) {
				t.Fatalf("%s %q: Validate says %v, ValidateFields %v", stream, row, err, ferr)
			}
		}
		if err == nil {
			// Whatever passes is valid JSON and an array.
			var vals []json.RawMessage
			if uerr := json.Unmarshal(row, &vals); uerr != nil {
				t.Fatalf("Validate(%s) accepted %q, which is not a JSON array: %v", stream, row, uerr)
			}
			return
		}
		if !strings.Contains(err.Error(), stream) {
			t.Fatalf("error %q does not name the stream %s", err, stream)
		}
		_ = typeOf(row)
		_ = fmt.Sprint(describe(Type(which)))
	})
}

func BenchmarkValidate(b *testing.B) {
	c := testCatalogue(b)
	for _, s := range []string{StreamEvents, StreamCaches, StreamPresence} {
		row := json.RawMessage(validRows[s])
		b.Run(s, func(b *testing.B) {
			b.SetBytes(int64(len(row)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Validate(s, row); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The row tcprepl bench publishes: a long plain string and a
	// nanosecond timestamp (19 digits).
	row := json.RawMessage(`["bench_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", [12345], 1700000000000000000]`)
	b.Run("caches_bench_row", func(b *testing.B) {
		b.SetBytes(int64(len(row)))
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Validate(StreamCaches, row); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestTypeOfIntBounds: integers of 19 digits are ints up to the int64
// bounds, exactly as strconv.ParseInt decides.
func TestTypeOfIntBounds(t *testing.T) {
	for _, v := range []string{"1700000000000000000", "9223372036854775807", "9223372036854775808", "9999999999999999999",
		"-9223372036854775808", "-9223372036854775809", "0000000000000000001", "123456789012345678", "12345678901234567890", "-1", "1.5", "1e3"} {
		_, err := strconv.ParseInt(v, 10, 64)
		if got := typeOf([]byte(v)) == Int; got != (err == nil) {
			t.Errorf("typeOf(%s) is Int: %v; ParseInt error: %v", v, got, err)
		}
	}
}

// BenchmarkValidateFields is the publish path's check: the row is already
// valid JSON in wire form and arrives split into its fields (the split is
// part of cutting the rows out of the request), so only the shape is left.
func BenchmarkValidateFields(b *testing.B) {
	c := testCatalogue(b)
	rows := map[string]string{
		StreamEvents:       validRows[StreamEvents],
		StreamCaches:       validRows[StreamCaches],
		StreamPresence:     validRows[StreamPresence],
		"caches_bench_row": `["bench_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", [12345], 1700000000000000000]`,
	}
	for _, name := range []string{StreamEvents, StreamCaches, StreamPresence, "caches_bench_row"} {
		stream := name
		if name == "caches_bench_row" {
			stream = StreamCaches
		}
		row := json.RawMessage(rows[name])
		var buf [16][]byte
		fields, _ := jsonscan.AppendElements(row, buf[:0])
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(row)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.ValidateFields(stream, row, fields); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
