package streamlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/tcprepl/tcprepl/internal/replication"
)

var testStreams = []string{"events", "caches", "federation", "a", "ab"}

func openTest(t testing.TB, opts Options) *Log {
	t.Helper()
	if opts.Streams == nil {
		opts.Streams = testStreams
	}
	if opts.Dir == "" && opts.FS == nil && !opts.Ephemeral {
		opts.Dir = t.TempDir()
	}
	if opts.TrimInterval == 0 {
		opts.TrimInterval = -1
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func closeTest(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func rowsOf(vals ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(vals))
	for i, v := range vals {
		out[i] = json.RawMessage(v)
	}
	return out
}

func mustAppend(t testing.TB, l *Log, stream string, rows ...string) replication.Update {
	t.Helper()
	u, err := l.Append(context.Background(), stream, rowsOf(rows...))
	if err != nil {
		t.Fatalf("Append(%s): %v", stream, err)
	}
	return u
}

func mustRead(t testing.TB, l *Log, stream string, after, upTo int64, limit int) []replication.Update {
	t.Helper()
	us, err := l.ReadAfter(context.Background(), stream, after, upTo, limit)
	if err != nil {
		t.Fatalf("ReadAfter(%s, %d, %d, %d): %v", stream, after, upTo, limit, err)
	}
	return us
}

// summary renders updates as "token:row|row token:row" for compact asserts.
func summary(us []replication.Update) string {
	s := ""
	for i, u := range us {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d:", u.Token)
		for j, r := range u.Rows {
			if j > 0 {
				s += "|"
			}
			s += string(r)
		}
	}
	return s
}

// The contract both logs keep (appends, paging, trims, retention, identity,
// OnDurable order) is the shared suite, run in suite_test.go; the tests here
// are Pebble's own: its encoding, recovery and failure paths.

func TestAppendStoresWireForm(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	u := mustAppend(t, l, "caches", "[\"caf\u00e9\",\n {\"k\":[1,2]},  true ]")
	want := `["caf\u00e9", {"k": [1, 2]}, true]`
	if string(u.Rows[0]) != want {
		t.Fatalf("returned row %s, want %s", u.Rows[0], want)
	}
	if got := summary(mustRead(t, l, "caches", 0, 1, 1)); got != "1:"+want {
		t.Fatalf("stored row %s, want %s", got, want)
	}
}

func TestAppendErrors(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := map[string]struct {
		ctx    context.Context
		stream string
		rows   []json.RawMessage
		is     error
		substr string
	}{
		"unknown stream":  {stream: "nope", rows: rowsOf(`[1]`), is: replication.ErrUnknownStream},
		"no rows":         {stream: "events", rows: nil, substr: "no rows"},
		"invalid JSON":    {stream: "events", rows: rowsOf(`[1]`, `[1,`), substr: "row 1: row is not valid JSON"},
		"not an array":    {stream: "events", rows: rowsOf(`{"a":1}`), substr: "must be a JSON array"},
		"empty row":       {stream: "events", rows: rowsOf(``), substr: "not valid JSON"},
		"cancelled":       {ctx: cancelled, stream: "events", rows: rowsOf(`[1]`), is: context.Canceled},
		"trailing values": {stream: "events", rows: rowsOf(`[1] [2]`), substr: "not valid JSON"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			_, err := l.Append(ctx, tc.stream, tc.rows)
			if err == nil {
				t.Fatal("Append succeeded, want an error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v does not wrap %v", err, tc.is)
			}
			if tc.substr != "" && !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("error %q does not mention %q", err, tc.substr)
			}
		})
	}
	// Nothing of the refused appends was stored or consumed a token.
	if cur, _ := l.CurrentToken("events"); cur != 0 {
		t.Fatalf("CurrentToken = %d after refused appends, want 0", cur)
	}
}

// cacheModes runs a test with reads served by the tail cache and by Pebble.
var cacheModes = map[string]int64{"tail cache": 0, "pebble": -1}

func TestReadAfterErrors(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	mustAppend(t, l, "events", `[1]`)
	if _, err := l.ReadAfter(context.Background(), "nope", 0, 1, 1); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("unknown stream: %v, want ErrUnknownStream", err)
	}
	if _, err := l.CurrentToken("nope"); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("CurrentToken unknown stream: %v, want ErrUnknownStream", err)
	}
	if _, err := l.ReadAfter(context.Background(), "events", 0, 1, 0); err == nil || !strings.Contains(err.Error(), "at least 1 row") {
		t.Fatalf("limit 0: %v, want a page size error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.ReadAfter(ctx, "events", 0, 1, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v, want context.Canceled", err)
	}
	closeTest(t, l)
	if _, err := l.ReadAfter(context.Background(), "events", 0, 1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Append(context.Background(), "events", rowsOf(`[1]`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	if err := l.Trim("events", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Trim after Close: %v, want ErrClosed", err)
	}
	if _, err := l.TokenTime("events", 0); err != nil {
		t.Fatalf("TokenTime(0) after Close: %v; token 0 needs no read", err)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := map[string]Options{
		"no streams":       {Dir: t.TempDir()},
		"no directory":     {Streams: []string{"events"}},
		"empty name":       {Ephemeral: true, Streams: []string{""}},
		"NUL in name":      {Ephemeral: true, Streams: []string{"a\x00b"}},
		"duplicate stream": {Ephemeral: true, Streams: []string{"events", "events"}},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			l, err := Open(opts)
			if err == nil {
				_ = l.Close()
				t.Fatal("Open succeeded, want an error")
			}
		})
	}
	t.Run("directory is a file", func(t *testing.T) {
		fs := vfs.NewMem()
		f, err := fs.Create("file", vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		if l, err := Open(Options{FS: fs, Dir: "file", Streams: []string{"events"}}); err == nil {
			_ = l.Close()
			t.Fatal("Open on a file succeeded, want an error")
		}
	})
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, Options{Dir: dir})
	mustAppend(t, l, "events", `[1]`)
	mustAppend(t, l, "events", `[2]`, `[3]`)
	mustAppend(t, l, "caches", `["c"]`)
	t0, err := l.TokenTime("events", 2)
	if err != nil {
		t.Fatal(err)
	}
	closeTest(t, l)

	l = openTest(t, Options{Dir: dir})
	defer closeTest(t, l)
	if cur, _ := l.CurrentToken("events"); cur != 2 {
		t.Fatalf("CurrentToken(events) after reopen = %d, want 2", cur)
	}
	if cur, _ := l.CurrentToken("federation"); cur != 0 {
		t.Fatalf("CurrentToken(federation) after reopen = %d, want 0", cur)
	}
	if got := summary(mustRead(t, l, "events", 0, 10, 10)); got != "1:[1] 2:[2]|[3]" {
		t.Fatalf("after reopen: %s", got)
	}
	if t1, err := l.TokenTime("events", 2); err != nil || !t1.Equal(t0) {
		t.Fatalf("TokenTime after reopen = %v, %v; want %v", t1, err, t0)
	}
	if u := mustAppend(t, l, "events", `[4]`); u.Token != 3 {
		t.Fatalf("token after reopen = %d, want 3", u.Token)
	}
	st, err := l.Stats("events")
	if err != nil || st.Rows != 4 || st.OldestToken != 1 || st.CurrentToken != 3 {
		t.Fatalf("Stats after reopen = %+v, %v; want 4 rows, tokens 1..3", st, err)
	}
}

func TestEphemeralSharesCodePathButNotData(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	mustAppend(t, l, "events", `[1]`)
	closeTest(t, l)
	l = openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	if cur, _ := l.CurrentToken("events"); cur != 0 {
		t.Fatalf("a new ephemeral log starts at %d, want 0", cur)
	}
}

func TestTokenTimeAndStats(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	l := openTest(t, Options{Ephemeral: true, Now: clock.Now})
	defer closeTest(t, l)
	mustAppend(t, l, "events", `[1]`)
	clock.Advance(time.Second)
	mustAppend(t, l, "events", `[2]`, `[3]`)
	clock.Advance(time.Second)

	if tt, err := l.TokenTime("events", 1); err != nil || !tt.Equal(clock.start) {
		t.Fatalf("TokenTime(1) = %v, %v; want %v", tt, err, clock.start)
	}
	if tt, err := l.TokenTime("events", 2); err != nil || !tt.Equal(clock.start.Add(time.Second)) {
		t.Fatalf("TokenTime(2) = %v, %v", tt, err)
	}
	if tt, err := l.TokenTime("events", 0); err != nil || !tt.IsZero() {
		t.Fatalf("TokenTime(0) = %v, %v; want zero time", tt, err)
	}
	if _, err := l.TokenTime("events", 3); !errors.Is(err, ErrFutureToken) {
		t.Fatalf("TokenTime(3) = %v, want ErrFutureToken", err)
	}
	if _, err := l.TokenTime("nope", 1); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("TokenTime(unknown) = %v, want ErrUnknownStream", err)
	}
	st, err := l.Stats("events")
	if err != nil {
		t.Fatal(err)
	}
	want := StreamStats{Stream: "events", CurrentToken: 2, OldestToken: 1, Rows: 3, RowsPerSecond: 0.3, LastAppend: clock.start.Add(time.Second)}
	if !st.LastAppend.Equal(want.LastAppend) {
		t.Fatalf("LastAppend = %v, want %v", st.LastAppend, want.LastAppend)
	}
	st.LastAppend = want.LastAppend
	if st != want {
		t.Fatalf("Stats = %+v\nwant %+v", st, want)
	}
	if _, err := l.Stats("nope"); !errors.Is(err, replication.ErrUnknownStream) {
		t.Fatalf("Stats(unknown) = %v", err)
	}
	all := l.AllStats()
	if len(all) != len(testStreams) || all[0].Rows != 3 || all[1].Stream != "caches" || all[1].OldestToken != 1 || all[1].CurrentToken != 0 {
		t.Fatalf("AllStats = %+v", all)
	}
	// The rate forgets seconds older than its window.
	clock.Advance(time.Minute)
	if st, _ := l.Stats("events"); st.RowsPerSecond != 0 {
		t.Fatalf("rate a minute later = %v, want 0", st.RowsPerSecond)
	}
	if got := l.Streams(); fmt.Sprint(got) != fmt.Sprint(testStreams) {
		t.Fatalf("Streams() = %v, want %v", got, testStreams)
	}
}

func TestPublishTimesNeverGoBackwards(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	l := openTest(t, Options{Ephemeral: true, Now: clock.Now})
	defer closeTest(t, l)
	mustAppend(t, l, "events", `[1]`)
	clock.Advance(-time.Hour) // the wall clock steps back
	u := mustAppend(t, l, "events", `[2]`)
	if !u.Time.Equal(clock.start) {
		t.Fatalf("time after a clock step back = %v, want %v", u.Time, clock.start)
	}
}

// TestConcurrentAppendsAndReads runs appenders on several streams with
// readers following them; under -race it also checks the committer's
// hand-off. Every stream must hold every row once, tokens dense and each
// appender's rows in its own order.
func TestConcurrentAppendsAndReads(t *testing.T) {
	for mode, cache := range cacheModes {
		t.Run(mode, func(t *testing.T) { testConcurrentAppendsAndReads(t, cache) })
	}
}

func testConcurrentAppendsAndReads(t *testing.T, cache int64) {
	l := openTest(t, Options{TailCacheBytes: cache})
	defer closeTest(t, l)
	const appenders, perAppender = 8, 100
	streams := []string{"events", "caches"}
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, appenders*2)
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := streams[a%len(streams)]
			for i := range perAppender {
				if _, err := l.Append(ctx, stream, rowsOf(fmt.Sprintf("[%d, %d]", a, i), fmt.Sprintf("[%d, %d]", a, i))); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	var rwg sync.WaitGroup
	for _, stream := range streams {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			after := int64(0)
			for {
				cur, _ := l.CurrentToken(stream)
				us, err := l.ReadAfter(ctx, stream, after, cur, 7)
				if err != nil {
					errc <- err
					return
				}
				for _, u := range us {
					if u.Token != after+1 {
						errc <- fmt.Errorf("reader of %s: token %d after %d", stream, u.Token, after)
						return
					}
					after = u.Token
				}
				select {
				case <-done:
					if after == cur && len(us) == 0 {
						return
					}
				default:
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, stream := range streams {
		us := mustRead(t, l, stream, 0, 1<<40, 1<<30)
		next := map[int]int{}
		for i, u := range us {
			if u.Token != int64(i+1) || len(u.Rows) != 2 {
				t.Fatalf("%s: update %d is token %d with %d rows", stream, i, u.Token, len(u.Rows))
			}
			var ai [2]int
			if err := json.Unmarshal(u.Rows[0], &ai); err != nil {
				t.Fatal(err)
			}
			if ai[1] != next[ai[0]] {
				t.Fatalf("%s: appender %d row %d, want %d", stream, ai[0], ai[1], next[ai[0]])
			}
			next[ai[0]]++
		}
		if len(us) != appenders/len(streams)*perAppender {
			t.Fatalf("%s holds %d tokens, want %d", stream, len(us), appenders/len(streams)*perAppender)
		}
	}
}

type fakeClock struct {
	mu    sync.Mutex
	start time.Time
	now   time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{start: t, now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestCommitFailureIsSticky: once a commit fails (in applying the batch or
// in its fsync), nothing of it becomes visible, and every later append is
// refused until a restart.
func TestCommitFailureIsSticky(t *testing.T) {
	diskErr := errors.New("injected: no space left on device")
	tests := map[string]func(l *Log){
		"apply fails": func(l *Log) {
			l.apply = func(*pebble.Batch) error { return diskErr }
		},
		"fsync fails": func(l *Log) {
			l.syncWait = func(b *pebble.Batch) error {
				_ = b.SyncWait() // Pebble requires it before Close
				return diskErr
			}
		},
	}
	for name, inject := range tests {
		t.Run(name, func(t *testing.T) {
			l := openTest(t, Options{Ephemeral: true})
			defer closeTest(t, l)
			mustAppend(t, l, "events", `[1]`)
			// Safe without a lock: the committer and syncer read these
			// only after receiving the next append, which happens after.
			inject(l)
			_, err := l.Append(context.Background(), "events", rowsOf(`[2]`))
			if !errors.Is(err, ErrFailed) || !errors.Is(err, diskErr) || !strings.Contains(err.Error(), "restart the master") {
				t.Fatalf("Append on a failing disk: %v; want ErrFailed wrapping the disk error, saying what to do", err)
			}
			for _, stream := range []string{"events", "caches"} {
				if _, err := l.Append(context.Background(), stream, rowsOf(`[3]`)); !errors.Is(err, ErrFailed) {
					t.Fatalf("Append to %s after a failure: %v, want ErrFailed", stream, err)
				}
			}
			if cur, _ := l.CurrentToken("events"); cur != 1 {
				t.Fatalf("CurrentToken after a failed commit = %d, want 1", cur)
			}
			if got := summary(mustRead(t, l, "events", 0, 5, 5)); got != "1:[1]" {
				t.Fatalf("reads after a failed commit: %s", got)
			}
		})
	}
}

// TestRoundsAfterAFailedOneFail: rounds already in flight behind a failed
// one fail too, even if their own fsync succeeds, so no token becomes
// visible after a gap.
func TestRoundsAfterAFailedOneFail(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	diskErr := errors.New("injected: I/O error")
	held := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	l.syncWait = func(b *pebble.Batch) error {
		_ = b.SyncWait()
		if calls.Add(1) == 1 {
			close(held)
			<-release // hold the first round until the others are applied
			return diskErr
		}
		return nil
	}
	// applied counts the appends the committer has applied to Pebble: once
	// it reaches 4, the three behind the held round are in flight.
	var applied atomic.Int32
	apply := l.apply
	l.apply = func(b *pebble.Batch) error {
		err := apply(b)
		applied.Add(int32(b.Count()))
		return err
	}
	errc := make(chan error, 4)
	appendAsync := func(i int) {
		go func() {
			_, err := l.Append(context.Background(), "events", rowsOf(fmt.Sprintf("[%d]", i)))
			errc <- err
		}()
	}
	appendAsync(0)
	<-held
	for i := 1; i < 4; i++ {
		appendAsync(i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for applied.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 4 appends applied behind the held round", applied.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range 4 {
		if err := <-errc; !errors.Is(err, ErrFailed) {
			t.Fatalf("append behind a failed round: %v, want ErrFailed", err)
		}
	}
	if cur, _ := l.CurrentToken("events"); cur != 0 {
		t.Fatalf("CurrentToken = %d after failed rounds, want 0", cur)
	}
}

// cancelAfter is a context whose Err turns to Canceled after n calls: it
// cancels a read deterministically in the middle of a page.
type cancelAfter struct {
	context.Context
	n atomic.Int32
}

func (c *cancelAfter) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

func TestReadAfterCancelledMidPage(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, TailCacheBytes: -1}) // the Pebble path
	defer closeTest(t, l)
	rows := make([]string, 1000)
	for i := range rows {
		rows[i] = "[1]"
	}
	for range 10 {
		mustAppend(t, l, "events", rows...)
	}
	// One check before the read starts, then about one per ctxCheckEvery
	// rows (here before tokens 6 and 10).
	ctx := &cancelAfter{Context: context.Background()}
	ctx.n.Store(2)
	_, err := l.ReadAfter(ctx, "events", 0, 10, 1<<20)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAfter cancelled mid-page: %v, want context.Canceled", err)
	}
	if ctx.n.Load() >= 0 {
		t.Fatalf("the read stopped before reaching the in-page check")
	}
}

// TestReadAfterCancelledAmongSmallTokens: a page of many one-row tokens
// checks the context too (each token counts toward ctxCheckEvery).
func TestReadAfterCancelledAmongSmallTokens(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, TailCacheBytes: -1}) // the Pebble path
	defer closeTest(t, l)
	const tokens = 5000
	for range tokens {
		mustAppend(t, l, "events", "[1]")
	}
	ctx := &cancelAfter{Context: context.Background()}
	ctx.n.Store(2)
	_, err := l.ReadAfter(ctx, "events", 0, tokens, 1<<20)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAfter cancelled mid-page: %v, want context.Canceled", err)
	}
}

func TestAppendRefusesRowsTooLongToSend(t *testing.T) {
	// "RDATA caches " + 19 token digits + " " is 33 bytes: room for a
	// 10-byte row in 43.
	l := openTest(t, Options{Ephemeral: true, MaxLineLength: 43})
	defer closeTest(t, l)
	mustAppend(t, l, "caches", `["123456"]`)
	tests := map[string]struct {
		rows []json.RawMessage
		want string
	}{
		"one byte over": {rowsOf(`["1234567"]`), "row 0: row too long for one RDATA line: the row is 11 bytes, so its RDATA line could be 44 bytes, over the line limit of 43 bytes"},
		// 6 bytes as sent to Append, 10 in wire form (\u00e9).
		"long only once escaped": {rowsOf(`["é"]`, `["éé"]`), "row 1: row too long for one RDATA line: the row is 16 bytes, so its RDATA line could be 49 bytes"},
		"in a batch":             {rowsOf(`[1]`, `[2]`, `["1234567"]`), "row 2: row too long for one RDATA line"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := l.Append(context.Background(), "caches", tc.rows)
			if !errors.Is(err, ErrRowTooLong) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Append: %v, want ErrRowTooLong and %q", err, tc.want)
			}
		})
	}
	if cur, _ := l.CurrentToken("caches"); cur != 1 {
		t.Fatalf("CurrentToken = %d, want 1: nothing of a refused batch is stored", cur)
	}
}

func TestAppendEncoded(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true, MaxLineLength: 43})
	defer closeTest(t, l)
	// Stored exactly as given, even where Append would re-encode.
	u, err := l.AppendEncoded(context.Background(), "caches", rowsOf(`["a", 1]`, `[1,2]`))
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != 1 || string(u.Rows[1]) != `[1,2]` {
		t.Fatalf("AppendEncoded = %+v", u)
	}
	if got := summary(mustRead(t, l, "caches", 0, 1, 10)); got != `1:["a", 1]|[1,2]` {
		t.Fatalf("stored %s", got)
	}
	tests := map[string]struct {
		stream string
		rows   []json.RawMessage
		is     error
		want   string
	}{
		"unknown stream": {stream: "nope", rows: rowsOf(`[1]`), is: replication.ErrUnknownStream},
		"no rows":        {stream: "caches", want: "no rows"},
		"empty row":      {stream: "caches", rows: rowsOf(`[1]`, ``), want: "row 1: not in wire form"},
		"not an array":   {stream: "caches", rows: rowsOf(`{"a": 1}`), want: "row 0: not in wire form"},
		"leading space":  {stream: "caches", rows: rowsOf(` [1]`), want: "not in wire form"},
		"newline":        {stream: "caches", rows: rowsOf("[1,\n2]"), want: "not in wire form"},
		"carriage ret":   {stream: "caches", rows: rowsOf("[1,\r2]"), want: "not in wire form"},
		"too long":       {stream: "caches", rows: rowsOf(`["1234567"]`), is: ErrRowTooLong},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := l.AppendEncoded(context.Background(), tc.stream, tc.rows)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AppendEncoded: %v; want %v / %q", err, tc.is, tc.want)
			}
		})
	}
	if cur, _ := l.CurrentToken("caches"); cur != 1 {
		t.Fatalf("CurrentToken = %d after refused appends, want 1", cur)
	}
}

// TestCloseLeavesNoGoroutines: the committer, syncer, trimmer and Pebble's
// own goroutines all end with Close.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := openTest(t, Options{Dir: t.TempDir(), TrimInterval: time.Millisecond, DefaultRetention: Retention{MaxRows: 2}})
	for i := 0; i < 20; i++ {
		mustAppend(t, l, "events", `[1]`, `[2]`)
	}
	// Retention keeps the newest token (two rows) at least.
	if got := summary(mustRead(t, l, "events", 19, 20, 5)); got != "20:[1]|[2]" {
		t.Fatalf("read: %s", got)
	}
	closeTest(t, l)
}

// TestAppendContextWhileQueueFull: an append waiting for room in the queue
// gives up when its context ends, and is not stored; appends already queued
// complete.
func TestAppendContextWhileQueueFull(t *testing.T) {
	l := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, l)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	realApply := l.apply
	l.apply = func(b *pebble.Batch) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release // the disk hangs: the committer stops taking appends
		return realApply(b)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2048)
	appendAsync := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Append(context.Background(), "events", rowsOf(fmt.Sprintf("[%d]", i)))
			errc <- err
		}()
	}
	// One append takes the committer into the hanging apply; only then
	// fill the queue, so the committer cannot drain any of it.
	appendAsync(0)
	<-entered
	queued := 1 + cap(l.reqs) + 20
	for i := 1; i < queued; i++ {
		appendAsync(i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(l.reqs) < cap(l.reqs) {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d of %d", len(l.reqs), cap(l.reqs))
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Append(ctx, "events", rowsOf(`["late"]`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append into a full queue with a deadline: %v, want DeadlineExceeded", err)
	}
	close(release)
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	us := mustRead(t, l, "events", 0, 1<<20, 1<<20)
	if len(us) != queued {
		t.Fatalf("%d tokens stored, want %d", len(us), queued)
	}
	for _, u := range us {
		if string(u.Rows[0]) == `["late"]` {
			t.Fatal("the append that gave up was stored")
		}
	}
}

// TestLargeAppend: an append larger than half the memtable goes through
// Pebble's large-batch path (the batch itself becomes a flushable) and is
// read back whole, before and after a reopen.
func TestLargeAppend(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{FS: fs, Dir: "db", MemTableSize: 1 << 20, TailCacheBytes: -1}
	l := openTest(t, opts)
	pad := strings.Repeat("x", 600)
	rows := make([]string, 2000) // about 1.2 MB
	for i := range rows {
		rows[i] = fmt.Sprintf(`[%d, "%s"]`, i, pad)
	}
	mustAppend(t, l, "events", `["before"]`)
	u := mustAppend(t, l, "events", rows...)
	mustAppend(t, l, "events", `["after"]`)
	check := func(l *Log) {
		t.Helper()
		us := mustRead(t, l, "events", 0, 3, 1)
		if len(us) != 1 || us[0].Token != 1 {
			t.Fatalf("first page: %v", summary(us))
		}
		us = mustRead(t, l, "events", 1, 3, 1)
		if len(us) != 1 || us[0].Token != u.Token || len(us[0].Rows) != len(rows) {
			t.Fatalf("large token: %d updates, token %d, %d rows", len(us), us[0].Token, len(us[0].Rows))
		}
		for i, r := range us[0].Rows {
			if string(r) != rows[i] {
				t.Fatalf("row %d = %.40s..., want %.40s...", i, r, rows[i])
			}
		}
		if got := summary(mustRead(t, l, "events", 2, 3, 1)); got != `3:["after"]` {
			t.Fatalf("after the large token: %s", got)
		}
	}
	check(l)
	closeTest(t, l)
	l = openTest(t, opts)
	defer closeTest(t, l)
	check(l)
}
