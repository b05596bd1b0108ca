package pglog

import (
	"testing"

	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestSetRetentionAppliesOnTheNextPass: a reload shortens the retention of
// a running PostgreSQL log; the next pass trims by it.
func TestSetRetentionAppliesOnTheNextPass(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn, func(o *Options) { o.DefaultRetention = Retention{MaxRows: 100} })
	for range 6 {
		if _, err := appendRow(l, "events", `[1]`); err != nil {
			t.Fatal(err)
		}
		if _, err := appendRow(l, "caches", `[1]`); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("events"); st.OldestToken != 1 {
		t.Fatalf("before the reload: %+v, want everything kept", st)
	}
	l.SetRetention(map[string]Retention{"events": {MaxRows: 2}}, Retention{})
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("events"); st.OldestToken != 5 || st.CurrentToken != 6 {
		t.Fatalf("events after SetRetention(maxRows 2): %+v, want tokens 5..6", st)
	}
	if st, _ := l.Stats("caches"); st.OldestToken != 1 {
		t.Fatalf("caches with an unbounded default: %+v, want everything kept", st)
	}
}
