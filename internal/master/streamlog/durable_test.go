package streamlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// durableRecorder is an OnDurable hand-off that keeps what it was given.
type durableRecorder struct {
	mu      sync.Mutex
	updates []replication.Update
}

func (r *durableRecorder) record(u replication.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
}

func (r *durableRecorder) has(stream string, token int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.updates, func(u replication.Update) bool { return u.Stream == stream && u.Token == token })
}

// TestOnDurableHandsUpdatesInOrder: concurrent appenders to two streams,
// whose Appends return in any order; the log hands every update over once,
// in token order per stream, with the rows appended, before the appender
// hears back, and only once the token is visible to readers.
func TestOnDurableHandsUpdatesInOrder(t *testing.T) {
	rec := &durableRecorder{}
	var l *Log
	visible := func(u replication.Update) {
		if cur, _ := l.CurrentToken(u.Stream); cur < u.Token {
			t.Errorf("%s token %d handed over while the current token is %d", u.Stream, u.Token, cur)
		}
		rec.record(u)
	}
	l = openTest(t, Options{Ephemeral: true, OnDurable: visible})
	defer closeTest(t, l)
	const appenders, each = 8, 60
	streams := []string{"events", "caches"}
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Go(func() {
			for i := range each {
				stream := streams[(a+i)%2]
				u, err := l.Append(context.Background(), stream, rowsOf(fmt.Sprintf(`[%d, %d]`, a, i)))
				if err != nil {
					t.Error(err)
					return
				}
				if !rec.has(stream, u.Token) {
					t.Errorf("%s token %d acknowledged before it was handed over", stream, u.Token)
				}
			}
		})
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.updates) != appenders*each {
		t.Fatalf("%d updates handed over, want %d", len(rec.updates), appenders*each)
	}
	next := map[string]int64{}
	for _, u := range rec.updates {
		next[u.Stream]++
		if u.Token != next[u.Stream] {
			t.Fatalf("%s: token %d handed over where %d was due", u.Stream, u.Token, next[u.Stream])
		}
		stored := mustRead(t, l, u.Stream, u.Token-1, u.Token, 10)
		if len(stored) != 1 || !slices.EqualFunc(stored[0].Rows, u.Rows, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
			t.Fatalf("%s token %d: handed over %q, stored %v", u.Stream, u.Token, u.Rows, stored)
		}
	}
}

// TestOnDurableSkipsFailedCommits: an append whose commit failed is never
// handed over, and neither is anything after it.
func TestOnDurableSkipsFailedCommits(t *testing.T) {
	rec := &durableRecorder{}
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	l.OnDurable(rec.record)
	mustAppend(t, l, "events", `[1]`)
	diskErr := errors.New("injected: no space left on device")
	// Safe without a lock: the syncer reads it only after receiving the
	// next append, which happens after.
	l.syncWait = func(b *pebble.Batch) error {
		_ = b.SyncWait()
		return diskErr
	}
	if _, err := l.Append(context.Background(), "events", rowsOf(`[2]`)); !errors.Is(err, diskErr) {
		t.Fatalf("Append on a failing disk: %v", err)
	}
	if _, err := l.Append(context.Background(), "caches", rowsOf(`[3]`)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after a failure: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.updates) != 1 || rec.updates[0].Token != 1 {
		t.Fatalf("handed over %+v, want only events token 1", rec.updates)
	}
}

// TestOnDurableReplaced: a new hand-off replaces the old one, and nil stops
// it.
func TestOnDurableReplaced(t *testing.T) {
	first, second := &durableRecorder{}, &durableRecorder{}
	l := openTest(t, Options{Ephemeral: true, OnDurable: first.record})
	defer closeTest(t, l)
	mustAppend(t, l, "events", `[1]`)
	l.OnDurable(second.record)
	mustAppend(t, l, "events", `[2]`)
	l.OnDurable(nil)
	mustAppend(t, l, "events", `[3]`)
	if !first.has("events", 1) || first.has("events", 2) || !second.has("events", 2) || second.has("events", 3) {
		t.Fatalf("first got %+v, second %+v", first.updates, second.updates)
	}
}
