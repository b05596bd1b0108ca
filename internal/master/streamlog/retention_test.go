package streamlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tcprepl/tcprepl/internal/replication"
)

func wantTooOld(t *testing.T, err error, token, oldest int64) {
	t.Helper()
	var tooOld *replication.TokenTooOldError
	if !errors.As(err, &tooOld) {
		t.Fatalf("error %v, want *TokenTooOldError", err)
	}
	if tooOld.Token != token || tooOld.Oldest != oldest {
		t.Fatalf("TokenTooOldError %+v, want token %d oldest %d", tooOld, token, oldest)
	}
}

func wantStats(t *testing.T, l *Log, stream string, current, oldest, rows int64) {
	t.Helper()
	st, err := l.Stats(stream)
	if err != nil {
		t.Fatal(err)
	}
	if st.CurrentToken != current || st.OldestToken != oldest || st.Rows != rows {
		t.Fatalf("Stats(%s) = current %d oldest %d rows %d; want %d %d %d", stream, st.CurrentToken, st.OldestToken, st.Rows, current, oldest, rows)
	}
}

func TestRetentionByCount(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, Retention: map[string]Retention{"events": {MaxRows: 5}}, DefaultRetention: Retention{MaxRows: 1}})
	defer closeTest(t, l)
	for i := 1; i <= 5; i++ { // tokens 1..5, two rows each
		mustAppend(t, l, "events", fmt.Sprintf("[%d]", i), fmt.Sprintf("[%d]", i))
	}
	mustAppend(t, l, "caches", `[1]`, `[1]`, `[1]`) // one token larger than its MaxRows
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	// Dropping tokens 1..3 leaves 4 rows <= 5; dropping only 1..2 would leave 6.
	wantStats(t, l, "events", 5, 4, 4)
	// The newest token survives even though it alone exceeds MaxRows.
	wantStats(t, l, "caches", 1, 1, 3)

	_, err := l.ReadAfter(context.Background(), "events", 2, 5, 100)
	wantTooOld(t, err, 2, 4)
	if got := summary(mustRead(t, l, "events", 3, 5, 100)); got != "4:[4]|[4] 5:[5]|[5]" {
		t.Fatalf("read after trim: %s", got)
	}
	_, err = l.TokenTime("events", 3)
	wantTooOld(t, err, 3, 4)
	if _, err := l.TokenTime("events", 4); err != nil {
		t.Fatalf("TokenTime of the oldest held token: %v", err)
	}
	// A second pass with nothing new changes nothing.
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 5, 4, 4)
	mustAppend(t, l, "caches", `[2]`)
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "caches", 2, 2, 1)
}

func TestRetentionByAge(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	opts := Options{Dir: dir, Now: clock.Now, Retention: map[string]Retention{"events": {MaxAge: time.Minute}}}
	l := openTest(t, opts)
	mustAppend(t, l, "events", `[1]`)
	clock.Advance(30 * time.Second)
	mustAppend(t, l, "events", `[2]`)
	clock.Advance(60 * time.Second)
	mustAppend(t, l, "events", `[3]`)
	mustAppend(t, l, "caches", `[1]`) // no retention configured for caches
	clock.Advance(30 * time.Second)   // now = +2m: tokens 1 (+0) and 2 (+30s) are older than a minute
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 3, 3, 1)
	wantStats(t, l, "caches", 1, 1, 1)

	// Long quiet: age empties the stream, but its token is remembered.
	clock.Advance(time.Hour)
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 3, 4, 0)
	if us := mustRead(t, l, "events", 3, 3, 10); len(us) != 0 {
		t.Fatalf("read at current: %v", us)
	}
	_, err := l.ReadAfter(context.Background(), "events", 2, 3, 10)
	wantTooOld(t, err, 2, 4)
	closeTest(t, l)

	// The retention state and the current token survive a restart, even
	// with no rows left to recover the token from.
	l = openTest(t, opts)
	defer closeTest(t, l)
	wantStats(t, l, "events", 3, 4, 0)
	// The current token's publish time is still known (for "seconds
	// behind"); older ones are gone.
	if tt, err := l.TokenTime("events", 3); err != nil || !tt.Equal(clock.start.Add(90*time.Second)) {
		t.Fatalf("TokenTime(current) of an emptied, reopened stream = %v, %v; want %v", tt, err, clock.start.Add(90*time.Second))
	}
	if st, _ := l.Stats("events"); !st.LastAppend.Equal(clock.start.Add(90 * time.Second)) {
		t.Fatalf("LastAppend of an emptied, reopened stream = %v", st.LastAppend)
	}
	_, err = l.TokenTime("events", 2)
	wantTooOld(t, err, 2, 4)
	_, err = l.ReadAfter(context.Background(), "events", 1, 3, 10)
	wantTooOld(t, err, 1, 4)
	if u := mustAppend(t, l, "events", `[4]`); u.Token != 4 {
		t.Fatalf("token after an emptied stream reopened = %d, want 4", u.Token)
	}
	wantStats(t, l, "events", 4, 4, 1)
	if got := summary(mustRead(t, l, "events", 3, 4, 10)); got != "4:[4]" {
		t.Fatalf("read: %s", got)
	}
}

func TestRetentionCountAndAgeTogether(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	l := openTest(t, Options{Ephemeral: true, Now: clock.Now, DefaultRetention: Retention{MaxRows: 3, MaxAge: time.Minute}})
	defer closeTest(t, l)
	for i := 1; i <= 6; i++ {
		mustAppend(t, l, "events", fmt.Sprintf("[%d]", i))
		clock.Advance(15 * time.Second)
	}
	// now = +90s. Count keeps tokens 4..6; age keeps those published at or
	// after +30s (tokens 3..6). The stricter bound wins.
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 6, 4, 3)
	clock.Advance(40 * time.Second) // now = +130s: age drops tokens published before +70s (4 and 5)
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "events", 6, 6, 1)
}

func TestTrim(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, Options{Dir: dir})
	for i := 1; i <= 4; i++ {
		mustAppend(t, l, "federation", fmt.Sprintf("[%d]", i))
	}
	if err := l.Trim("federation", 2); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, "federation", 4, 3, 2)
	if err := l.Trim("federation", 1); err != nil { // below oldest: no-op
		t.Fatal(err)
	}
	wantStats(t, l, "federation", 4, 3, 2)
	if err := l.Trim("federation", 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim("federation", 99); err != nil { // clamped to current
		t.Fatal(err)
	}
	wantStats(t, l, "federation", 4, 5, 0)
	if err := l.Trim("nope", 1); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("Trim(unknown) = %v, want ErrUnknownStream", err)
	}
	if err := l.Trim("events", 5); err != nil { // empty stream: nothing to do
		t.Fatal(err)
	}
	wantStats(t, l, "events", 0, 1, 0)
	closeTest(t, l)
	l = openTest(t, Options{Dir: dir})
	defer closeTest(t, l)
	wantStats(t, l, "federation", 4, 5, 0)
}

func TestBackgroundTrimmer(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, TrimInterval: 5 * time.Millisecond, DefaultRetention: Retention{MaxRows: 2}})
	defer closeTest(t, l)
	for i := 0; i < 5; i++ {
		mustAppend(t, l, "events", `[1]`)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := l.Stats("events")
		if st.OldestToken == 4 && st.Rows == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trimmer did not apply retention: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTrimWhileReading races readers against trims: a reader either gets
// the exact next token or a TokenTooOldError, never a gap.
func TestTrimWhileReading(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	ctx := context.Background()
	const tokens = 400
	for i := 1; i <= tokens; i++ {
		mustAppend(t, l, "events", fmt.Sprintf("[%d]", i), `[0]`)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	var tooOld atomic.Int64
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := int64(0)
			for !stop.Load() {
				us, err := l.ReadAfter(ctx, "events", after, tokens, 5)
				var e *replication.TokenTooOldError
				switch {
				case errors.As(err, &e):
					if e.Token != after || e.Oldest <= after+1 {
						errc <- fmt.Errorf("too-old error (token %d, oldest %d) for a read after %d", e.Token, e.Oldest, after)
						return
					}
					tooOld.Add(1)
					after = e.Oldest - 1
					continue
				case err != nil:
					errc <- err
					return
				}
				for _, u := range us {
					if u.Token != after+1 || string(u.Rows[0]) != fmt.Sprintf("[%d]", u.Token) {
						errc <- fmt.Errorf("got token %d row %s after %d", u.Token, u.Rows[0], after)
						return
					}
					after = u.Token
				}
				if after == tokens {
					after = 0 // go round again; most of it is gone by now
				}
			}
		}()
	}
	for through := int64(1); through <= tokens; through += 3 {
		if err := l.Trim("events", through); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if tooOld.Load() == 0 {
		t.Log("no reader hit a trimmed range this run")
	}
}

// TestCorruptRetentionRecord: a damaged record must stop Open with an error
// that names the stream, not be guessed around.
func TestCorruptRetentionRecord(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, Options{FS: fs, Dir: "db"})
	mustAppend(t, l, "events", `[1]`)
	if err := l.db.Set(metaKey("events"), []byte("short"), nil); err != nil {
		t.Fatal(err)
	}
	closeTest(t, l)
	_, err := Open(Options{FS: fs, Dir: "db", Streams: testStreams, TrimInterval: -1})
	if err == nil || !strings.Contains(err.Error(), `recover stream "events"`) || !strings.Contains(err.Error(), "malformed retention record") {
		t.Fatalf("Open with a damaged record: %v", err)
	}
}

// TestDamagedLog: reads of a log whose keys or values were damaged
// underneath fail with an error saying so, naming the stream and token,
// never with a short or shifted page.
func TestDamagedLog(t *testing.T) {
	key2 := appendTokenKey(nil, tokenKeyPrefix("events"), 2)
	// Token 2 as stored: two rows `[2]`, three rows through it.
	h2 := func(l *Log) header {
		h, err := l.getHeader(l.streams["events"], 2)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	set2 := func(l *Log, v []byte) error { return l.db.Set(key2, v, nil) }
	tests := map[string]struct {
		damage func(l *Log) error
		want   string
	}{
		"row missing": {
			damage: func(l *Log) error { return set2(l, appendTokenValue(nil, h2(l), rowsOf(`[2]`))) },
			want:   "token 2 holds 1 rows, its header says 2",
		},
		"row too many": {
			damage: func(l *Log) error {
				h := h2(l)
				h.rows = 1
				return set2(l, appendTokenValue(nil, h, rowsOf(`[2]`, `[2]`)))
			},
			want: "token 2 holds 4 bytes after the 1 rows its header says",
		},
		"value truncated mid-row": {
			damage: func(l *Log) error {
				v := appendTokenValue(nil, h2(l), rowsOf(`[2]`, `[2]`))
				return set2(l, v[:len(v)-1])
			},
			want: "token 2 row 1: length 3 runs past the end of the value (2 bytes left)",
		},
		"value truncated after the header": {
			damage: func(l *Log) error { return set2(l, appendHeader(nil, h2(l))) },
			want:   "token 2 holds 0 rows, its header says 2",
		},
		"row length truncated": {
			damage: func(l *Log) error { return set2(l, append(appendHeader(nil, h2(l)), 0x80)) },
			want:   "token 2 row 0: malformed row length",
		},
		"row length overflows": {
			damage: func(l *Log) error {
				v := appendHeader(nil, h2(l))
				for range 11 {
					v = append(v, 0xff)
				}
				return set2(l, append(v, 1))
			},
			want: "token 2 row 0: malformed row length",
		},
		"row length past the end": {
			damage: func(l *Log) error { return set2(l, append(appendHeader(nil, h2(l)), 200, 1, '[', ']')) },
			want:   "token 2 row 0: length 200 runs past the end of the value (2 bytes left)",
		},
		"token missing": {
			damage: func(l *Log) error { return l.db.Delete(key2, nil) },
			want:   "expected token 2, found 3",
		},
		"token range missing": {
			damage: func(l *Log) error {
				return l.db.DeleteRange(key2, appendTokenKey(nil, tokenKeyPrefix("events"), 3), nil)
			},
			want: "expected token 2, found 3",
		},
		"value empty": {
			damage: func(l *Log) error { return set2(l, nil) },
			want:   "token 2: malformed token header: want 20 bytes, got 0",
		},
		"header malformed": {
			damage: func(l *Log) error { return set2(l, []byte("x")) },
			want:   "token 2: malformed token header",
		},
		"key malformed": {
			damage: func(l *Log) error {
				return l.db.Set(append(tokenKeyPrefix("events"), 0, 0, 0, 0, 0, 0, 0, 2, 0), nil, nil)
			},
			want: "malformed token key",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// No tail cache: the damage is in Pebble, where reads go.
			l := openTest(t, Options{Ephemeral: true, TailCacheBytes: -1})
			defer closeTest(t, l)
			mustAppend(t, l, "events", `[1]`)
			mustAppend(t, l, "events", `[2]`, `[2]`)
			mustAppend(t, l, "events", `[3]`)
			// The page must not be served around the damage either.
			if got := summary(mustRead(t, l, "events", 0, 3, 100)); got != "1:[1] 2:[2]|[2] 3:[3]" {
				t.Fatalf("before the damage: %s", got)
			}
			if err := tc.damage(l); err != nil {
				t.Fatal(err)
			}
			_, err := l.ReadAfter(context.Background(), "events", 0, 3, 100)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `read stream "events"`) || !strings.Contains(err.Error(), "the log is damaged") {
				t.Fatalf("ReadAfter on a damaged log: %v, want an error about stream %q saying the log is damaged, containing %q", err, "events", tc.want)
			}
		})
	}
}

// TestDamagedHeaderStopsOpen: recovery reads the newest token's header; a
// damaged one stops Open with an error naming the stream and token.
func TestDamagedHeaderStopsOpen(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, Options{FS: fs, Dir: "db"})
	mustAppend(t, l, "events", `[1]`)
	if err := l.db.Set(appendTokenKey(nil, tokenKeyPrefix("events"), 1), []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	closeTest(t, l)
	_, err := Open(Options{FS: fs, Dir: "db", Streams: testStreams, TrimInterval: -1})
	if err == nil || !strings.Contains(err.Error(), `recover stream "events": token 1: malformed token header`) {
		t.Fatalf("Open with a damaged header: %v", err)
	}
}

// TestRetentionAndTrimOnADamagedLog: a missing header stops Trim and
// ApplyRetention with an error naming the stream, and the trimmer keeps
// running (it logs and retries).
func TestRetentionAndTrimOnADamagedLog(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, DefaultRetention: Retention{MaxRows: 1}})
	defer closeTest(t, l)
	for i := 0; i < 4; i++ {
		mustAppend(t, l, "events", `[1]`)
	}
	if err := l.db.Delete(appendTokenKey(nil, tokenKeyPrefix("events"), 2), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim("events", 2); err == nil || !strings.Contains(err.Error(), `trim stream "events" through token 2`) {
		t.Fatalf("Trim through a missing header: %v", err)
	}
	err := l.ApplyRetention()
	if err == nil || !strings.Contains(err.Error(), `apply retention to stream "events"`) {
		t.Fatalf("ApplyRetention with a missing header: %v", err)
	}
	wantStats(t, l, "events", 4, 1, 4) // nothing trimmed
}

// TestNewestTokenBelowOldestStopsOpen: a retention record claiming more was
// trimmed than the log holds is damage, not something to guess around.
func TestNewestTokenBelowOldestStopsOpen(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, Options{FS: fs, Dir: "db"})
	mustAppend(t, l, "events", `[1]`)
	if err := l.db.Set(metaKey("events"), encodeMeta(meta{oldest: 5}), nil); err != nil {
		t.Fatal(err)
	}
	closeTest(t, l)
	_, err := Open(Options{FS: fs, Dir: "db", Streams: testStreams, TrimInterval: -1})
	if err == nil || !strings.Contains(err.Error(), "newest token 1 is older than the oldest retained token 5") {
		t.Fatalf("Open: %v", err)
	}
}
