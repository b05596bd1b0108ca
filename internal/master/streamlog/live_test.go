package streamlog

import (
	"fmt"
	"testing"
)

// TestSetRetentionAppliesOnTheNextPass: a reload shortens one stream's
// retention and sets a default; the next pass trims by the new bounds, and
// a stream the new config leaves unbounded keeps everything.
func TestSetRetentionAppliesOnTheNextPass(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, Retention: map[string]Retention{"events": {MaxRows: 100}}})
	defer closeTest(t, l)
	for i := 1; i <= 6; i++ {
		mustAppend(t, l, "events", fmt.Sprintf("[%d]", i))
		mustAppend(t, l, "caches", fmt.Sprintf("[%d]", i))
	}
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 6, 1, 6)
	wantStats(t, l, "caches", 6, 1, 6)

	l.SetRetention(map[string]Retention{"events": {MaxRows: 2}, "caches": {}}, Retention{MaxRows: 1})
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 6, 5, 2)
	wantStats(t, l, "caches", 6, 1, 6) // {} is unbounded, not the default
	wantStats(t, l, "a", 0, 1, 0)

	l.SetRetention(nil, Retention{MaxRows: 3})
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "caches", 6, 4, 3)
}
