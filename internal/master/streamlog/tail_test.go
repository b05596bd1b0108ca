package streamlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestTailCacheServesWithoutPebble: recent updates are read from memory,
// rows and publish times alike.
func TestTailCacheServesWithoutPebble(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	u1 := mustAppend(t, l, "events", `[1]`)
	mustAppend(t, l, "events", `[2]`, `[2]`)
	mustAppend(t, l, "events", `[3]`)
	prefix := tokenKeyPrefix("events")
	if err := l.db.DeleteRange(appendTokenKey(nil, prefix, 0), appendTokenKey(nil, prefix, 99), nil); err != nil {
		t.Fatal(err)
	}
	if got := summary(mustRead(t, l, "events", 0, 3, 100)); got != "1:[1] 2:[2]|[2] 3:[3]" {
		t.Fatalf("read with Pebble emptied underneath: %q; the tail cache should serve it", got)
	}
	if got := summary(mustRead(t, l, "events", 1, 3, 1)); got != "2:[2]|[2]" {
		t.Fatalf("page of limit 1 from the cache: %q", got)
	}
	if tt, err := l.TokenTime("events", 1); err != nil || !tt.Equal(u1.Time) {
		t.Fatalf("TokenTime from the cache = %v, %v; want %v", tt, err, u1.Time)
	}
}

// TestTailCacheMatchesStore drives random appends and trims through a log
// with a tail cache small enough to evict all the time, and checks every
// read against the same read from Pebble: same updates, same pages, same
// errors. It also checks the cache's byte accounting.
func TestTailCacheMatchesStore(t *testing.T) {
	const budget = 3000
	l := openTest(t, Options{Ephemeral: true, TailCacheBytes: budget})
	defer closeTest(t, l)
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	streams := []string{"events", "caches"}
	n, hits, misses := 0, 0, 0
	for step := 0; step < 600; step++ {
		stream := streams[rng.IntN(len(streams))]
		switch op := rng.IntN(10); {
		case op < 7:
			rows := make([]string, 1+rng.IntN(5))
			for i := range rows {
				n++
				rows[i] = fmt.Sprintf(`[%d, "%s"]`, n, "xxxxxxxxxxxxxxxxxxxx"[:rng.IntN(20)])
			}
			mustAppend(t, l, stream, rows...)
		case op < 8:
			cur, _ := l.CurrentToken(stream)
			if err := l.Trim(stream, cur-int64(rng.IntN(20))); err != nil {
				t.Fatal(err)
			}
		default:
			st, _ := l.Stats(stream)
			for k := 0; k < 20; k++ {
				after := st.OldestToken - 2 + int64(rng.IntN(int(st.CurrentToken-st.OldestToken+3)))
				upTo := after + int64(rng.IntN(12)) - 1
				limit := 1 + rng.IntN(8)
				if a, u := max(after, 0), min(upTo, st.CurrentToken); a < u && a >= st.OldestToken-1 {
					if _, hit := l.streams[stream].tail.Read(a, u, limit); hit {
						hits++
					} else {
						misses++
					}
				}
				got, gerr := l.ReadAfter(ctx, stream, after, upTo, limit)
				want, werr := l.read(ctx, stream, after, upTo, limit, false)
				if fmt.Sprint(gerr) != fmt.Sprint(werr) || summary(got) != summary(want) {
					t.Fatalf("step %d ReadAfter(%s, %d, %d, %d):\n cache %q, %v\n store %q, %v", step, stream, after, upTo, limit, summary(got), gerr, summary(want), werr)
				}
				for i := range got {
					if !got[i].Time.Equal(want[i].Time) || got[i].Stream != want[i].Stream {
						t.Fatalf("step %d: update %d: cache %v %s, store %v %s", step, got[i].Token, got[i].Time, got[i].Stream, want[i].Time, want[i].Stream)
					}
				}
			}
		}
		var sum int64
		for _, s := range streams {
			sum += l.streams[s].tail.Bytes()
		}
		if total := l.cacheBytes.Load(); total != sum {
			t.Fatalf("step %d: cache accounts %d bytes, the streams hold %d", step, total, sum)
		}
		// Over budget only by what each stream's newest update alone holds.
		if total := l.cacheBytes.Load(); total > budget+2*400 {
			t.Fatalf("step %d: cache holds %d bytes, budget %d", step, total, budget)
		}
	}
	// Both paths must have been taken for the comparison to mean anything.
	if hits < 50 || misses < 50 {
		t.Fatalf("cache hits %d, misses %d: the workload no longer exercises both paths", hits, misses)
	}
	t.Logf("reads served by the cache: %d, by Pebble: %d", hits, misses)
}

// TestTokenTimeFromPebble: tokens not in the tail cache are looked up in
// their headers.
func TestTokenTimeFromPebble(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	l := openTest(t, Options{Ephemeral: true, Now: clock.Now, TailCacheBytes: -1})
	for i := 0; i < 3; i++ {
		mustAppend(t, l, "events", `[1]`)
		clock.Advance(time.Second)
	}
	if tt, err := l.TokenTime("events", 2); err != nil || !tt.Equal(clock.start.Add(time.Second)) {
		t.Fatalf("TokenTime(2) = %v, %v", tt, err)
	}
	if err := l.db.Delete(appendTokenKey(nil, tokenKeyPrefix("events"), 2), nil); err != nil {
		t.Fatal(err)
	}
	_, err := l.TokenTime("events", 2)
	wantTooOld(t, err, 2, 1) // a header gone from under the check reads as trimmed
	if err := l.db.Set(appendTokenKey(nil, tokenKeyPrefix("events"), 1), []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.TokenTime("events", 1); err == nil || !strings.Contains(err.Error(), "malformed token header") {
		t.Fatalf("TokenTime of a damaged header: %v", err)
	}
	closeTest(t, l)
	if _, err := l.TokenTime("events", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("TokenTime after Close: %v, want ErrClosed", err)
	}
}
