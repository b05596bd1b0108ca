package synapse

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// FuzzParse: no input panics the parser or the tracker; whatever parses
// formats to a line that parses to the same command, and formatting is
// stable.
func FuzzParse(f *testing.F) {
	for _, tc := range goldenLines {
		f.Add(tc.line)
	}
	for _, s := range []string{"", " ", "REPLICATE x y", "RDATA a b batch", "POSITION a b 1", "USER_SYNC a b c d e", "LOCK_RELEASED [1,2,3]", "X", "RDATA a b -0 x"} {
		f.Add(s)
	}
	tr := newTracker("example.org", map[string][]string{"events": {"master", "p1"}}, time.Second, Limits{Streams: 8, Instances: 8})
	now := time.Unix(1767225600, 0)
	f.Fuzz(func(t *testing.T, line string) {
		_ = tr.observe("example.org", line, now)
		var s Snapshot
		tr.snapshot(now, &s)

		cmd, err := Parse(line)
		if err != nil {
			if errors.Is(err, ErrUnknownCommand) {
				if _, ok := cmd.(Unknown); !ok {
					t.Fatalf("unknown command %q returned %T", line, cmd)
				}
			}
			return
		}
		wire := Format(cmd)
		again, err := Parse(wire)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but Parse(Format) = %q: %v", line, wire, err)
		}
		if !reflect.DeepEqual(again, cmd) {
			t.Fatalf("round trip of %q changed the command:\n %#v\n %#v", line, cmd, again)
		}
		if Format(again) != wire {
			t.Fatalf("Format is not stable for %q", line)
		}
	})
}
