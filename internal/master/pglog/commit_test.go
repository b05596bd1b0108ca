package pglog

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tcprepl/tcprepl/internal/pgtest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// TestTakeoverDropsRowsAfterAGap: rows after a missing token (a round that
// committed after an earlier one failed, never acknowledged) are dropped
// when the log is next opened, per stream, and the tokens continue from the
// gap; a stream without a gap keeps every row.
func TestTakeoverDropsRowsAfterAGap(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn)
	for i := range 5 {
		for _, s := range []string{"events", "caches"} {
			if _, err := appendRow(l, s, fmt.Sprintf(`[%d]`, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Token 6 of events is missing; 7 and 8 committed after it failed.
	query(t, dsn, `INSERT INTO tcprepl_token (stream, token, published_ns, n_rows, cum, bytes_before, rows)
		VALUES ('events', 7, 1, 1, 7, 21, '[7]'), ('events', 8, 1, 1, 8, 24, '[8]'), ('caches', 6, 1, 1, 6, 15, '[6]')`)
	l = mustOpen(t, dsn)
	for s, want := range map[string]int64{"events": 5, "caches": 6} {
		if cur, _ := l.CurrentToken(s); cur != want {
			t.Fatalf("%s: current token %d after the takeover, want %d", s, cur, want)
		}
	}
	var n int64
	query(t, dsn, `SELECT count(*) FROM tcprepl_token WHERE stream = 'events' AND token > 5`, &n)
	if n != 0 {
		t.Fatalf("%d rows of events after the gap survived the takeover", n)
	}
	if u, err := appendRow(l, "events", `["next"]`); err != nil || u.Token != 6 {
		t.Fatalf("append after the takeover: token %d, %v; want 6", u.Token, err)
	}
}

// TestCommitConnectionLostMidLoad: one of the overlapping commit
// connections is ended while many appends are in flight. The log fails;
// every append it acknowledged is stored; reopened, each stream's tokens
// run without a gap from 1, and OnDurable saw every acknowledged token once
// and in order.
func TestCommitConnectionLostMidLoad(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	var mu sync.Mutex
	durable := map[string][]int64{}
	l := mustOpen(t, dsn, func(o *Options) {
		o.CommitConnections = 4
		o.OnDurable = func(u replication.Update) {
			mu.Lock()
			durable[u.Stream] = append(durable[u.Stream], u.Token)
			mu.Unlock()
		}
	})
	// The committer opens its connections before it takes the first
	// append: once one is acknowledged they are there.
	if _, err := appendRow(l, "events", `["first"]`); err != nil {
		t.Fatal(err)
	}
	if len(l.commitConns) != 3 {
		t.Fatalf("%d commit connections besides the write session, want 3", len(l.commitConns))
	}
	victim := l.commitConns[0].PgConn().PID()
	acked := map[string][]int64{"events": {1}}
	var ackMu sync.Mutex
	var wg sync.WaitGroup
	ackedCount := make(chan struct{}, 1<<16)
	// Appends of 32 KiB from 32 appenders: enough pending to start rounds
	// beside those in flight (minOverlapBytes).
	big := json.RawMessage(`["` + strings.Repeat("x", 16<<10) + `"]`)
	for i := range 32 {
		stream := []string{"events", "caches"}[i%2]
		wg.Go(func() {
			rows := []json.RawMessage{big, big}
			for {
				u, err := l.AppendEncoded(context.Background(), stream, rows)
				if err != nil {
					return
				}
				ackMu.Lock()
				acked[stream] = append(acked[stream], u.Token)
				ackMu.Unlock()
				ackedCount <- struct{}{}
			}
		})
	}
	for range 300 {
		<-ackedCount
	}
	query(t, dsn, fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, victim))
	wg.Wait()
	if l.Err() == nil {
		t.Fatal("the log did not fail after a commit connection was ended")
	}
	_ = l.Close()

	r := mustOpen(t, dsn)
	for _, s := range []string{"events", "caches"} {
		slices.Sort(acked[s])
		if !slices.Equal(durable[s], acked[s]) {
			t.Fatalf("%s: OnDurable saw %d tokens, %d acknowledged; they differ or are out of order", s, len(durable[s]), len(acked[s]))
		}
		for i, tok := range acked[s] {
			if tok != int64(i+1) {
				t.Fatalf("%s: acknowledged token %d at position %d: acknowledgements skipped a token", s, tok, i)
			}
		}
		cur, _ := r.CurrentToken(s)
		if cur < int64(len(acked[s])) {
			t.Fatalf("%s: %d tokens stored, %d acknowledged", s, cur, len(acked[s]))
		}
		var n, lo, hi int64
		query(t, dsn, fmt.Sprintf(`SELECT count(*), coalesce(min(token), 0), coalesce(max(token), 0) FROM tcprepl_token WHERE stream = '%s'`, s), &n, &lo, &hi)
		if n != cur || (n > 0 && (lo != 1 || hi != cur)) {
			t.Fatalf("%s after reopening: %d rows, tokens %d-%d, current %d: not gap-free", s, n, lo, hi, cur)
		}
	}
}

// TestCommitConnectionsRefusedCommitsAlone: when the database refuses the
// further commit connections (here a role's connection limit), the log
// commits on the write session alone: appends and reads still work.
func TestCommitConnectionsRefusedCommitsAlone(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	name := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	srv.Exec(t, `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tcprepl_limited') THEN CREATE ROLE tcprepl_limited LOGIN CONNECTION LIMIT 3; END IF; END $$`)
	query(t, dsn, `GRANT CREATE, USAGE ON SCHEMA public TO tcprepl_limited`)
	l := mustOpen(t, srv.DSNAs("tcprepl_limited", name), func(o *Options) { o.CommitConnections = MaxCommitConnections })
	for i := range 3 {
		u, err := appendRow(l, "events", fmt.Sprintf(`[%d]`, i))
		if err != nil || u.Token != int64(i+1) {
			t.Fatalf("append %d: token %d, %v", i, u.Token, err)
		}
	}
	if n := len(l.commitConns); n != 0 {
		t.Fatalf("%d further commit connections kept after some were refused, want none", n)
	}
	got, err := l.read(t.Context(), "events", 0, 3, 10, false)
	if err != nil || len(got) != 3 {
		t.Fatalf("read from the database: %d updates, %v", len(got), err)
	}
}
