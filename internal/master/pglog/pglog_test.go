package pglog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/pgtest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

func openDSN(t testing.TB, dsn string, mutate ...func(*Options)) (*Log, error) {
	t.Helper()
	opts := Options{DSN: dsn, ServerName: "hs.example", Streams: []string{"events", "caches"}, TrimInterval: -1}
	for _, m := range mutate {
		m(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Open(ctx, opts)
}

func mustOpen(t testing.TB, dsn string, mutate ...func(*Options)) *Log {
	t.Helper()
	l, err := openDSN(t, dsn, mutate...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func appendRow(l *Log, stream, row string) (replication.Update, error) {
	return l.AppendEncoded(context.Background(), stream, []json.RawMessage{json.RawMessage(row)})
}

func query(t testing.TB, dsn, sql string, dst ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if len(dst) == 0 {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return
	}
	if err := conn.QueryRow(ctx, sql).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestSecondWriterIsRefusedWhileTheFirstHoldsTheLock: the advisory lock
// keyed by the server name admits one writer; once it closes, the next one
// takes over with a new epoch and continues the tokens without a gap.
func TestSecondWriterIsRefusedWhileTheFirstHoldsTheLock(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	a := mustOpen(t, dsn)
	if _, err := appendRow(a, "events", `[1]`); err != nil {
		t.Fatal(err)
	}
	if _, err := openDSN(t, dsn); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open while the first holds the lock: %v, want ErrLocked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := mustOpen(t, dsn)
	if b.Epoch() != a.Epoch()+1 || b.LogID() != a.LogID() {
		t.Fatalf("takeover: epoch %d -> %d, log id %s -> %s; want the next epoch and the same id", a.Epoch(), b.Epoch(), a.LogID(), b.LogID())
	}
	u, err := appendRow(b, "events", `[2]`)
	if err != nil || u.Token != 2 {
		t.Fatalf("append after takeover: token %d, %v; want token 2", u.Token, err)
	}
}

// TestFencedWriterCannotCommit: once another master took the log over (the
// epoch moved on), the old one's next commit is refused by the database,
// stores nothing, and fails the log for good.
func TestFencedWriterCannotCommit(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	old := mustOpen(t, dsn)
	if _, err := appendRow(old, "events", `[1]`); err != nil {
		t.Fatal(err)
	}
	// What a takeover does to the log while the old master is frozen: its
	// session (and lock) may even survive, the epoch does not.
	query(t, dsn, `UPDATE tcprepl_log SET epoch = epoch + 1`)
	_, err := appendRow(old, "events", `[2]`)
	if !errors.Is(err, ErrFenced) || !errors.Is(err, ErrFailed) {
		t.Fatalf("append by a fenced writer: %v, want ErrFenced and ErrFailed", err)
	}
	if !strings.Contains(err.Error(), "took over at epoch 1, the log is now at epoch 2") {
		t.Fatalf("error %q does not say which epochs", err)
	}
	select {
	case <-old.Failed():
	default:
		t.Fatal("Failed not closed after the fenced commit")
	}
	if _, err := appendRow(old, "caches", `[3]`); !errors.Is(err, ErrFenced) {
		t.Fatalf("later append: %v, want the sticky ErrFenced", err)
	}
	if err := old.Trim("events", 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("trim by a fenced writer: %v, want ErrFenced", err)
	}
	var n int64
	query(t, dsn, `SELECT count(*) FROM tcprepl_token`, &n)
	if n != 1 {
		t.Fatalf("%d tokens stored, want only the one acknowledged before the takeover", n)
	}
	if cur, _ := old.CurrentToken("events"); cur != 1 {
		t.Fatalf("CurrentToken = %d after the fenced commit, want 1", cur)
	}
}

// TestFencedTrimOnTheSharedPool: trims run on the read pool, not the locked
// session, and are fenced all the same.
func TestFencedTrimOnTheSharedPool(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	old := mustOpen(t, dsn)
	for _, r := range []string{`[1]`, `[2]`} {
		if _, err := appendRow(old, "events", r); err != nil {
			t.Fatal(err)
		}
	}
	query(t, dsn, `UPDATE tcprepl_log SET epoch = epoch + 1`)
	if err := old.Trim("events", 1); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "writer fenced") {
		t.Fatalf("trim after takeover: %v, want the fencing error", err)
	}
	if _, err := appendRow(old, "events", `[3]`); !errors.Is(err, ErrFenced) {
		t.Fatalf("append after a fenced trim: %v, want ErrFenced: the log stops writing", err)
	}
	if st, _ := old.Stats("events"); st.OldestToken != 1 {
		t.Fatalf("oldest token %d after a refused trim, want 1", st.OldestToken)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	query(t, dsn, `UPDATE tcprepl_schema_version SET version = 99`)
	_, err := openDSN(t, dsn)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("schema version 99, this master knows only up to version %d", SchemaVersion)) {
		t.Fatalf("Open on a newer schema: %v, want a clear refusal", err)
	}
}

func TestRoleWithoutCreateIsToldWhatToGrant(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	name := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	srv.Exec(t, `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tcprepl_noperm') THEN CREATE ROLE tcprepl_noperm LOGIN; END IF; END $$`)
	query(t, dsn, `REVOKE CREATE ON SCHEMA public FROM PUBLIC`)
	_, err := openDSN(t, srv.DSNAs("tcprepl_noperm", name))
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "GRANT CREATE, USAGE ON SCHEMA public TO") {
		t.Fatalf("Open as a role without CREATE: %v, want ErrPermission naming the grant", err)
	}
	query(t, dsn, `GRANT CREATE, USAGE ON SCHEMA public TO tcprepl_noperm`)
	l, err := openDSN(t, srv.DSNAs("tcprepl_noperm", name))
	if err != nil {
		t.Fatalf("Open after the grant: %v", err)
	}
	_ = l.Close()
}

func TestAnotherServersDatabaseIsRefused(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn)
	_ = l.Close()
	_, err := openDSN(t, dsn, func(o *Options) { o.ServerName = "other.example" })
	if err == nil || !strings.Contains(err.Error(), `holds the stream log of server "hs.example", not "other.example"`) {
		t.Fatalf("Open by another server: %v", err)
	}
}

func TestUnreachableDatabase(t *testing.T) {
	// A port nothing listens on: a listener closed at once.
	_, err := openDSN(t, "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	if err == nil || !strings.Contains(err.Error(), "connect to PostgreSQL at 127.0.0.1:1") {
		t.Fatalf("Open against no server: %v", err)
	}
}

// TestDatabaseGoneFailsTheLog: a commit the database cannot take fails the
// log (whether it committed is unknown), nothing is acknowledged.
func TestDatabaseGoneFailsTheLog(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	l := mustOpen(t, dsn)
	if _, err := appendRow(l, "events", `[1]`); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := appendRow(l, "events", `[2]`); !errors.Is(err, ErrFailed) || errors.Is(err, ErrFenced) {
		t.Fatalf("append with the database down: %v, want ErrFailed (not fenced)", err)
	}
	if l.Err() == nil {
		t.Fatal("Err is nil after a failed commit")
	}
}

// TestRetentionByBytes: MaxBytes counts stored row bytes, drops whole
// tokens oldest first, always keeps the newest, and survives a reopen.
func TestRetentionByBytes(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	keep := func(o *Options) { o.DefaultRetention = Retention{MaxBytes: 350} }
	l := mustOpen(t, dsn, keep)
	row := `["` + strings.Repeat("x", 96) + `"]` // 100 bytes
	for range 10 {
		if _, err := appendRow(l, "events", row); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("events"); st.OldestToken != 8 || st.CurrentToken != 10 {
		t.Fatalf("after retention of 350 bytes over 10 tokens of 100: %+v, want tokens 8..10", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dsn, func(o *Options) { o.DefaultRetention = Retention{MaxBytes: 150} })
	if _, err := appendRow(l, "events", row); err != nil {
		t.Fatal(err)
	}
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Stats("events"); st.OldestToken != 11 || st.CurrentToken != 11 {
		t.Fatalf("after reopen and retention of 150 bytes: %+v, want only token 11", st)
	}
}

// TestTakeoverAfterTheSessionIsLostFencesTheOldWriter: two logs on one
// database. The first one's writer session is ended (as PostgreSQL does when
// a node vanishes and keep-alives expire); the second takes the log over.
// The first, still running, can neither append (its session is gone) nor
// trim through its read pool (the epoch check refuses), and the second
// continues the tokens.
func TestTakeoverAfterTheSessionIsLostFencesTheOldWriter(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	a := mustOpen(t, dsn)
	for _, r := range []string{`[1]`, `[2]`} {
		if _, err := appendRow(a, "events", r); err != nil {
			t.Fatal(err)
		}
	}
	var ended bool
	query(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, &ended)
	if !ended {
		t.Fatal("no writer session to end")
	}
	var b *Log
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if b, err = openDSN(t, dsn); err == nil {
			break
		}
		// The ended backend releases its lock a moment later.
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("takeover: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := a.Trim("events", 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("trim by the old writer after the takeover: %v, want ErrFenced", err)
	}
	if _, err := appendRow(a, "events", `[3]`); !errors.Is(err, ErrFailed) {
		t.Fatalf("append by the old writer: %v, want ErrFailed", err)
	}
	u, err := appendRow(b, "events", `[3]`)
	if err != nil || u.Token != 3 {
		t.Fatalf("append by the new writer: token %d, %v; want 3", u.Token, err)
	}
	if st, _ := b.Stats("events"); st.OldestToken != 1 {
		t.Fatalf("the old writer's trim took effect: %+v", st)
	}
}
