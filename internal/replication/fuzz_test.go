package replication

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseCommand feeds arbitrary lines to the parser. It must never panic;
// what it accepts must format, and the formatted line must parse back to the
// same command (rows and keys in their Python form) and format identically.
func FuzzParseCommand(f *testing.F) {
	if data, err := os.ReadFile("testdata/protocol_examples.txt"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if len(l) > 2 {
				f.Add([]byte(l[2:]))
			}
		}
	}
	for _, tc := range canonicalLines {
		f.Add([]byte(tc.line))
	}
	for _, s := range []string{"PING", "PING 1\r", "", " ", "RDATA caches batch [1]", "REPLICATE ALL NOW",
		"REPLICATE ALL 1", "USER_SYNC a b c", "FOO", "RDATA a b c", "POSITION x 99999999999999999999",
		"USER_IP u [\"a\", \"b\", \"c\", null, 1]", "INVALIDATE_CACHE f [\"\\ud800\"]", "PING \xff", "PING \x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := ParseCommand(line)
		if err != nil {
			var perr *ProtocolError
			if !errors.As(err, &perr) {
				t.Fatalf("ParseCommand(%q) error %T, want *ProtocolError", line, err)
			}
			if strings.ContainsAny(perr.Error(), "\n") {
				t.Fatalf("error text for %q spans lines: %q", line, perr.Error())
			}
			return
		}
		out, err := FormatCommand(cmd)
		if err != nil {
			// Free text may hold characters a sender refuses (a CR inside).
			if strings.Contains(err.Error(), "newline") {
				return
			}
			t.Fatalf("parsed %q to %#v, which does not format: %v", line, cmd, err)
		}
		back, err := ParseCommand(out)
		if err != nil {
			t.Fatalf("formatted %#v as %q, which does not parse: %v", cmd, out, err)
		}
		if !reflect.DeepEqual(canonical(t, back), canonical(t, cmd)) {
			t.Fatalf("round trip of %q: %#v became %#v", line, cmd, back)
		}
		again, err := FormatCommand(back)
		if err != nil || string(again) != string(out) {
			t.Fatalf("format not stable: %q then %q (%v)", out, again, err)
		}
	})
}

// canonical rewrites a command's JSON into its Python form, so commands can
// be compared whatever spacing they were parsed with.
func canonical(t *testing.T, c Command) Command {
	py := func(raw json.RawMessage) json.RawMessage {
		out, err := AppendPythonJSON(nil, raw)
		if err != nil {
			t.Fatalf("parsed JSON %q does not re-encode: %v", raw, err)
		}
		return out
	}
	switch c := c.(type) {
	case RdataCommand:
		c.Row = py(c.Row)
		if c.Batch {
			c.Token = 0
		}
		return c
	case InvalidateCacheCommand:
		c.Keys = py(c.Keys)
		return c
	}
	return c
}
