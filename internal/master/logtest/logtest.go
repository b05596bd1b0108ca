// Package logtest is the behaviour suite of the master's stream log: the
// contract both backends (Pebble, internal/master/streamlog, and
// PostgreSQL, internal/master/pglog) keep, run against each of them from
// their own tests. It states what the master relies on: per-stream
// gap-free tokens, durable before visible and acknowledged, hand-off to
// OnDurable in token order before the append returns, pages that never
// split an update, retention and trims, identity across reopens.
package logtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// Log is the stream log as the suite drives it: the master's StreamLog
// (internal/master) plus what the suite needs to check it.
type Log interface {
	replication.Source
	Append(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error)
	AppendEncoded(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error)
	Trim(stream string, through int64) error
	ApplyRetention() error
	Stats(stream string) (streamlog.StreamStats, error)
	TokenTime(stream string, token int64) (time.Time, error)
	OnDurable(h func(replication.Update))
	LogID() string
	Close() error
}

// Config is what the suite varies between opens; a backend maps it onto
// its own options, with the background trimmer off.
type Config struct {
	Streams []string
	// TailCacheBytes as in both backends' options: 0 the default cache,
	// -1 none (every read goes to the store).
	TailCacheBytes int64
	// Retention is every stream's retention.
	MaxRows int64
	MaxAge  time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store opens the same underlying store each time it is called.
type Store func(t testing.TB, cfg Config) Log

// NewStore returns a new, empty store.
type NewStore func(t testing.TB) Store

var streams = []string{"events", "caches", "federation", "a", "ab"}

// cacheModes runs a test with reads served by the tail cache and by the
// store.
var cacheModes = map[string]int64{"tail cache": 0, "store": -1}

// Run runs the suite against a backend.
func Run(t *testing.T, newStore NewStore) {
	tests := map[string]func(*testing.T, NewStore){
		"AppendReadCurrent":           testAppendReadCurrent,
		"AppendErrors":                testAppendErrors,
		"ReadAfterPaging":             testReadAfterPaging,
		"ReadAfterPagesCoverAll":      testReadAfterPagesCoverEverything,
		"ReadAfterErrorsAndClose":     testReadAfterErrors,
		"DurableAcrossReopen":         testDurableAcrossReopen,
		"TokenTimeAndStats":           testTokenTimeAndStats,
		"TrimAndTokenTooOld":          testTrim,
		"RetentionByCount":            testRetentionByCount,
		"RetentionByAge":              testRetentionByAge,
		"ConcurrentAppendsInOrder":    testConcurrentAppends,
		"AppendEncodedRefusesNonWire": testAppendEncoded,
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) { test(t, newStore) })
	}
}

func open(t testing.TB, newStore NewStore, cfg Config) (Log, Store) {
	t.Helper()
	store := newStore(t)
	return openStore(t, store, cfg), store
}

func openStore(t testing.TB, store Store, cfg Config) Log {
	t.Helper()
	if cfg.Streams == nil {
		cfg.Streams = streams
	}
	l := store(t, cfg)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func rowsOf(vals ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(vals))
	for i, v := range vals {
		out[i] = json.RawMessage(v)
	}
	return out
}

func mustAppend(t testing.TB, l Log, stream string, rows ...string) replication.Update {
	t.Helper()
	u, err := l.Append(context.Background(), stream, rowsOf(rows...))
	if err != nil {
		t.Fatalf("Append(%s): %v", stream, err)
	}
	return u
}

func mustRead(t testing.TB, l Log, stream string, after, upTo int64, limit int) []replication.Update {
	t.Helper()
	us, err := l.ReadAfter(context.Background(), stream, after, upTo, limit)
	if err != nil {
		t.Fatalf("ReadAfter(%s, %d, %d, %d): %v", stream, after, upTo, limit, err)
	}
	return us
}

// summary renders updates as "token:row|row token:row" for compact asserts.
func summary(us []replication.Update) string {
	parts := make([]string, len(us))
	for i, u := range us {
		rows := make([]string, len(u.Rows))
		for j, r := range u.Rows {
			rows[j] = string(r)
		}
		parts[i] = fmt.Sprintf("%d:%s", u.Token, strings.Join(rows, "|"))
	}
	return strings.Join(parts, " ")
}

func testAppendReadCurrent(t *testing.T, newStore NewStore) {
	for mode, cache := range cacheModes {
		t.Run(mode, func(t *testing.T) {
			l, _ := open(t, newStore, Config{TailCacheBytes: cache})
			if got, err := l.CurrentToken("events"); err != nil || got != 0 {
				t.Fatalf("CurrentToken before appends = %d, %v; want 0, nil", got, err)
			}
			u1 := mustAppend(t, l, "events", `["ev",["$a","!r","m.room.message",null,null,null]]`)
			u2 := mustAppend(t, l, "events", `[1]`, `[2]`, `[3]`)
			u3 := mustAppend(t, l, "caches", `["f", ["k"], 5]`)
			if u1.Token != 1 || u2.Token != 2 || u3.Token != 1 {
				t.Fatalf("tokens = %d, %d, %d; want 1, 2, 1 (tokens are per stream)", u1.Token, u2.Token, u3.Token)
			}
			if u2.Stream != "events" || len(u2.Rows) != 3 || u2.Time.IsZero() {
				t.Fatalf("update = %+v; want stream events, 3 rows, a publish time", u2)
			}
			if got, _ := l.CurrentToken("events"); got != 2 {
				t.Fatalf("CurrentToken(events) = %d, want 2", got)
			}
			us := mustRead(t, l, "events", 0, 100, 100)
			want := `1:["ev", ["$a", "!r", "m.room.message", null, null, null]] 2:[1]|[2]|[3]`
			if got := summary(us); got != want {
				t.Fatalf("ReadAfter = %s\nwant %s", got, want)
			}
			if !us[1].Time.Equal(u2.Time) || us[1].Stream != "events" {
				t.Fatalf("read update %+v; want time %v and stream events", us[1], u2.Time)
			}
			// Streams whose names are prefixes of each other stay apart.
			mustAppend(t, l, "a", `["a"]`)
			mustAppend(t, l, "ab", `["ab"]`)
			if got := summary(mustRead(t, l, "a", 0, 10, 10)); got != `1:["a"]` {
				t.Fatalf("ReadAfter(a) = %s", got)
			}
			if got := summary(mustRead(t, l, "ab", 0, 10, 10)); got != `1:["ab"]` {
				t.Fatalf("ReadAfter(ab) = %s", got)
			}
			if got := l.Streams(); strings.Join(got, ",") != strings.Join(streams, ",") {
				t.Fatalf("Streams() = %v, want %v in configured order", got, streams)
			}
		})
	}
}

func testAppendErrors(t *testing.T, newStore NewStore) {
	l, _ := open(t, newStore, Config{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := map[string]struct {
		ctx    context.Context
		stream string
		rows   []json.RawMessage
		is     error
	}{
		"unknown stream":  {stream: "nope", rows: rowsOf(`[1]`), is: replication.ErrUnknownStream},
		"no rows":         {stream: "events", rows: nil},
		"invalid JSON":    {stream: "events", rows: rowsOf(`[1]`, `[1,`)},
		"empty row":       {stream: "events", rows: rowsOf(``)},
		"cancelled":       {ctx: cancelled, stream: "events", rows: rowsOf(`[1]`), is: context.Canceled},
		"trailing values": {stream: "events", rows: rowsOf(`[1] [2]`)},
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
		})
	}
	if cur, _ := l.CurrentToken("events"); cur != 0 {
		t.Fatalf("CurrentToken = %d after refused appends, want 0 (no token consumed)", cur)
	}
	if u := mustAppend(t, l, "events", `[1]`); u.Token != 1 {
		t.Fatalf("first accepted append got token %d, want 1", u.Token)
	}
}

func testAppendEncoded(t *testing.T, newStore NewStore) {
	l, _ := open(t, newStore, Config{})
	for name, row := range map[string]string{
		"line break":   "[1,\n2]",
		"not an array": `{"a": 1}`,
		"empty":        ``,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := l.AppendEncoded(context.Background(), "events", rowsOf(row)); err == nil || !strings.Contains(err.Error(), "not in wire form") {
				t.Fatalf("AppendEncoded(%q): %v, want a wire form refusal", row, err)
			}
		})
	}
	u, err := l.AppendEncoded(context.Background(), "events", rowsOf(`["x", 1]`, `["y", 2]`))
	if err != nil || u.Token != 1 {
		t.Fatalf("AppendEncoded: %+v, %v", u, err)
	}
	if got := summary(mustRead(t, l, "events", 0, 1, 10)); got != `1:["x", 1]|["y", 2]` {
		t.Fatalf("stored %s", got)
	}
}

func testReadAfterPaging(t *testing.T, newStore NewStore) {
	for mode, cache := range cacheModes {
		t.Run(mode, func(t *testing.T) {
			l, _ := open(t, newStore, Config{TailCacheBytes: cache})
			// Tokens 1..5 with 1, 3, 1, 2, 4 rows.
			mustAppend(t, l, "events", `[1]`)
			mustAppend(t, l, "events", `[2]`, `[2]`, `[2]`)
			mustAppend(t, l, "events", `[3]`)
			mustAppend(t, l, "events", `[4]`, `[4]`)
			mustAppend(t, l, "events", `[5]`, `[5]`, `[5]`, `[5]`)
			tests := map[string]struct {
				after, upTo int64
				limit       int
				want        string
			}{
				"everything":                    {0, 5, 100, "1:[1] 2:[2]|[2]|[2] 3:[3] 4:[4]|[4] 5:[5]|[5]|[5]|[5]"},
				"limit 1 gives one update":      {0, 5, 1, "1:[1]"},
				"limit never splits a batch":    {1, 5, 1, "2:[2]|[2]|[2]"},
				"limit reached inside a batch":  {0, 5, 2, "1:[1] 2:[2]|[2]|[2]"},
				"limit reached exactly":         {0, 5, 4, "1:[1] 2:[2]|[2]|[2]"},
				"limit one past a boundary":     {0, 5, 5, "1:[1] 2:[2]|[2]|[2] 3:[3]"},
				"upTo respected":                {0, 3, 100, "1:[1] 2:[2]|[2]|[2] 3:[3]"},
				"upTo above current is clamped": {3, 99, 100, "4:[4]|[4] 5:[5]|[5]|[5]|[5]"},
				"after in the middle":           {2, 4, 100, "3:[3] 4:[4]|[4]"},
				"after equals upTo":             {3, 3, 100, ""},
				"after above upTo":              {4, 2, 100, ""},
				"after at current":              {5, 5, 100, ""},
				"after beyond current":          {9, 20, 100, ""},
				"negative after reads from 1":   {-7, 1, 100, "1:[1]"},
				"single last token":             {4, 5, 1, "5:[5]|[5]|[5]|[5]"},
			}
			for name, tc := range tests {
				t.Run(name, func(t *testing.T) {
					if got := summary(mustRead(t, l, "events", tc.after, tc.upTo, tc.limit)); got != tc.want {
						t.Fatalf("ReadAfter(%d, %d, %d) = %q\nwant %q", tc.after, tc.upTo, tc.limit, got, tc.want)
					}
				})
			}
		})
	}
}

func testReadAfterPagesCoverEverything(t *testing.T, newStore NewStore) {
	for mode, cache := range cacheModes {
		t.Run(mode, func(t *testing.T) {
			l, _ := open(t, newStore, Config{TailCacheBytes: cache})
			const tokens = 300
			n := 0
			for tok := 1; tok <= tokens; tok++ {
				rows := make([]string, tok%7+1)
				for i := range rows {
					n++
					rows[i] = fmt.Sprintf("[%d]", n)
				}
				mustAppend(t, l, "events", rows...)
			}
			for _, limit := range []int{1, 3, 10, 1000} {
				after, seen := int64(0), 0
				for {
					us := mustRead(t, l, "events", after, tokens, limit)
					if len(us) == 0 {
						break
					}
					for _, u := range us {
						if u.Token != after+1 {
							t.Fatalf("limit %d: token %d after %d", limit, u.Token, after)
						}
						for _, r := range u.Rows {
							seen++
							if string(r) != fmt.Sprintf("[%d]", seen) {
								t.Fatalf("limit %d: row %s, want [%d]", limit, r, seen)
							}
						}
						after = u.Token
					}
				}
				if seen != n || after != tokens {
					t.Fatalf("limit %d: read %d rows through token %d, want %d through %d", limit, seen, after, n, tokens)
				}
			}
		})
	}
}

func testReadAfterErrors(t *testing.T, newStore NewStore) {
	l, _ := open(t, newStore, Config{})
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
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := l.ReadAfter(context.Background(), "events", 0, 1, 1); !errors.Is(err, streamlog.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Append(context.Background(), "events", rowsOf(`[1]`)); !errors.Is(err, streamlog.ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, streamlog.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	if err := l.Trim("events", 1); !errors.Is(err, streamlog.ErrClosed) {
		t.Fatalf("Trim after Close: %v, want ErrClosed", err)
	}
}

func testDurableAcrossReopen(t *testing.T, newStore NewStore) {
	l, store := open(t, newStore, Config{})
	mustAppend(t, l, "events", `[1]`)
	mustAppend(t, l, "events", `[2]`, `[3]`)
	mustAppend(t, l, "caches", `["c"]`)
	id := l.LogID()
	if id == "" {
		t.Fatal("empty log id")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	l2 := openStore(t, store, Config{})
	if got, _ := l2.CurrentToken("events"); got != 2 {
		t.Fatalf("CurrentToken after reopen = %d, want 2", got)
	}
	if got := summary(mustRead(t, l2, "events", 0, 9, 100)); got != "1:[1] 2:[2]|[3]" {
		t.Fatalf("rows after reopen: %s", got)
	}
	if l2.LogID() != id {
		t.Fatalf("log id after reopen %s, want %s", l2.LogID(), id)
	}
	if st, _ := l2.Stats("events"); st.Rows != 3 || st.CurrentToken != 2 || st.OldestToken != 1 {
		t.Fatalf("stats after reopen %+v", st)
	}
	if u := mustAppend(t, l2, "events", `[4]`); u.Token != 3 {
		t.Fatalf("append after reopen got token %d, want 3: tokens are never reused", u.Token)
	}
	other, _ := open(t, newStore, Config{})
	if other.LogID() == id {
		t.Fatal("a new store has the same log id as another one")
	}
}

// fakeClock is a settable clock for publish times and retention by age.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

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

func testTokenTimeAndStats(t *testing.T, newStore NewStore) {
	for mode, cache := range cacheModes {
		t.Run(mode, func(t *testing.T) {
			start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			clock := &fakeClock{now: start}
			l, _ := open(t, newStore, Config{Now: clock.Now, TailCacheBytes: cache})
			if tt, err := l.TokenTime("events", 0); err != nil || !tt.IsZero() {
				t.Fatalf("TokenTime(0) = %v, %v; want the zero time", tt, err)
			}
			mustAppend(t, l, "events", `[1]`)
			clock.Advance(time.Second)
			mustAppend(t, l, "events", `[2]`, `[2]`)
			clock.Advance(time.Second)
			mustAppend(t, l, "events", `[3]`)
			for tok, want := range map[int64]time.Time{1: start, 2: start.Add(time.Second), 3: start.Add(2 * time.Second)} {
				if tt, err := l.TokenTime("events", tok); err != nil || !tt.Equal(want) {
					t.Fatalf("TokenTime(%d) = %v, %v; want %v", tok, tt, err, want)
				}
			}
			if _, err := l.TokenTime("events", 4); !errors.Is(err, streamlog.ErrFutureToken) {
				t.Fatalf("TokenTime(4): %v, want ErrFutureToken", err)
			}
			st, err := l.Stats("events")
			if err != nil || st.CurrentToken != 3 || st.OldestToken != 1 || st.Rows != 4 || !st.LastAppend.Equal(start.Add(2*time.Second)) {
				t.Fatalf("Stats = %+v, %v", st, err)
			}
			if _, err := l.Stats("nope"); !errors.Is(err, replication.ErrUnknownStream) {
				t.Fatalf("Stats(nope): %v", err)
			}
		})
	}
}

func wantTooOld(t testing.TB, err error, token, oldest int64) {
	t.Helper()
	var tooOld *replication.TokenTooOldError
	if !errors.As(err, &tooOld) || tooOld.Token != token || tooOld.Oldest != oldest {
		t.Fatalf("error %v, want TokenTooOldError for token %d with oldest %d", err, token, oldest)
	}
}

func testTrim(t *testing.T, newStore NewStore) {
	for mode, cache := range cacheModes {
		t.Run(mode, func(t *testing.T) {
			l, store := open(t, newStore, Config{TailCacheBytes: cache})
			for i := 1; i <= 5; i++ {
				mustAppend(t, l, "events", fmt.Sprintf("[%d]", i), fmt.Sprintf("[%d]", i))
			}
			if err := l.Trim("events", 2); err != nil {
				t.Fatalf("Trim: %v", err)
			}
			if err := l.Trim("events", 1); err != nil {
				t.Fatalf("Trim below oldest: %v, want a no-op", err)
			}
			_, err := l.ReadAfter(context.Background(), "events", 1, 5, 10)
			wantTooOld(t, err, 1, 3)
			_, err = l.TokenTime("events", 2)
			wantTooOld(t, err, 2, 3)
			if got := summary(mustRead(t, l, "events", 2, 5, 1)); got != "3:[3]|[3]" {
				t.Fatalf("read from the new oldest: %s", got)
			}
			if st, _ := l.Stats("events"); st.OldestToken != 3 || st.Rows != 6 || st.CurrentToken != 5 {
				t.Fatalf("stats after trim %+v", st)
			}
			// Trimming past the current token trims through it; the
			// stream remembers its token.
			if err := l.Trim("events", 99); err != nil {
				t.Fatal(err)
			}
			if st, _ := l.Stats("events"); st.OldestToken != 6 || st.Rows != 0 || st.CurrentToken != 5 {
				t.Fatalf("stats after trimming everything %+v", st)
			}
			if err := l.Trim("nope", 1); !errors.Is(err, replication.ErrUnknownStream) {
				t.Fatalf("Trim(nope): %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := openStore(t, store, Config{TailCacheBytes: cache})
			if st, _ := l2.Stats("events"); st.OldestToken != 6 || st.CurrentToken != 5 {
				t.Fatalf("stats after reopening a trimmed stream %+v", st)
			}
			if u := mustAppend(t, l2, "events", `[6]`); u.Token != 6 {
				t.Fatalf("append after a full trim and reopen: token %d, want 6", u.Token)
			}
		})
	}
}

func testRetentionByCount(t *testing.T, newStore NewStore) {
	l, _ := open(t, newStore, Config{MaxRows: 5})
	for i := 1; i <= 6; i++ {
		mustAppend(t, l, "events", fmt.Sprintf("[%d]", i), fmt.Sprintf("[%d]", i)) // 2 rows each
	}
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	// 12 rows; keeping at most 5 keeps tokens 5 and 6 (4 rows).
	if st, _ := l.Stats("events"); st.OldestToken != 5 || st.Rows != 4 {
		t.Fatalf("stats after retention by count %+v, want oldest 5 and 4 rows", st)
	}
	mustAppend(t, l, "caches", `[1]`, `[2]`, `[3]`, `[4]`, `[5]`, `[6]`, `[7]`)
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("caches"); st.OldestToken != 1 || st.Rows != 7 {
		t.Fatalf("a single token larger than MaxRows must be kept: %+v", st)
	}
}

func testRetentionByAge(t *testing.T, newStore NewStore) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := &fakeClock{now: start}
	l, _ := open(t, newStore, Config{MaxAge: time.Minute, Now: clock.Now})
	for i := 1; i <= 4; i++ {
		mustAppend(t, l, "events", fmt.Sprintf("[%d]", i))
		clock.Advance(30 * time.Second)
	}
	// Published at 0s, 30s, 60s, 90s; now 120s: tokens before 60s go.
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("events"); st.OldestToken != 3 || st.Rows != 2 {
		t.Fatalf("stats after retention by age %+v, want oldest 3", st)
	}
	clock.Advance(time.Hour)
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("events"); st.OldestToken != 5 || st.Rows != 0 || st.CurrentToken != 4 {
		t.Fatalf("a quiet stream ages out entirely, keeping its token: %+v", st)
	}
}

// testConcurrentAppends: appends from many goroutines to two streams get
// gap-free tokens; OnDurable sees every update once, in token order per
// stream, before its append returns; readers see the same.
func testConcurrentAppends(t *testing.T, newStore NewStore) {
	l, _ := open(t, newStore, Config{})
	var mu sync.Mutex
	handed := map[string][]int64{}
	l.OnDurable(func(u replication.Update) {
		mu.Lock()
		handed[u.Stream] = append(handed[u.Stream], u.Token)
		mu.Unlock()
	})
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := []string{"events", "caches"}[w%2]
			for i := range each {
				u, err := l.Append(context.Background(), stream, rowsOf(fmt.Sprintf("[%d, %d]", w, i)))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen := false
				for _, tok := range handed[stream] {
					seen = seen || tok == u.Token
				}
				mu.Unlock()
				if !seen {
					errs <- fmt.Errorf("append of %s token %d returned before OnDurable had it", stream, u.Token)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, stream := range []string{"events", "caches"} {
		toks := handed[stream]
		if len(toks) != writers/2*each {
			t.Fatalf("%s: OnDurable had %d updates, want %d", stream, len(toks), writers/2*each)
		}
		for i, tok := range toks {
			if tok != int64(i+1) {
				t.Fatalf("%s: OnDurable update %d has token %d: not gap-free in order", stream, i, tok)
			}
		}
		us := mustRead(t, l, stream, 0, 1<<40, 1<<20)
		perWriter := map[string]int{}
		for i, u := range us {
			if u.Token != int64(i+1) || len(u.Rows) != 1 {
				t.Fatalf("%s: read update %d = token %d with %d rows", stream, i, u.Token, len(u.Rows))
			}
			var row [2]int
			if err := json.Unmarshal(u.Rows[0], &row); err != nil {
				t.Fatal(err)
			}
			// Each writer's rows are stored in the order it appended them.
			key := fmt.Sprint(row[0])
			if row[1] != perWriter[key] {
				t.Fatalf("%s: writer %d row %d stored after row %d", stream, row[0], row[1], perWriter[key]-1)
			}
			perWriter[key]++
		}
	}
}

// BenchAppend measures durable appends through a backend: each op is one
// Append of batch rows (64-byte caches rows), acknowledged only once
// durable; appenders run concurrently and share group commits.
func BenchAppend(b *testing.B, newStore NewStore, appenders, batch int) {
	l := newStore(b)(b, Config{Streams: []string{"caches"}})
	defer func() { _ = l.Close() }()
	rows := make([]json.RawMessage, batch)
	size := 0
	for i := range rows {
		rows[i] = json.RawMessage(fmt.Sprintf(`["get_user_by_id", ["@user%08d:example.com"], %d]`, i, 1490197670513+i))
		size += len(rows[i])
	}
	b.SetBytes(int64(size))
	var next sync.WaitGroup
	var mu sync.Mutex
	n := 0
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		n++
		return n <= b.N
	}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range appenders {
		next.Add(1)
		go func() {
			defer next.Done()
			for take() {
				if _, err := l.AppendEncoded(ctx, "caches", rows); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	next.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
}
