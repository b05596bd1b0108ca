package pglog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// frozen makes a writer that never renews its lease once it took over:
// what a process stopped with SIGSTOP looks like to the database (its
// sessions stay open, its lease runs out).
func frozen(ttl time.Duration) func(*Options) {
	return func(o *Options) {
		o.LeaseTTL = ttl
		o.LeaseRenewInterval = time.Hour
	}
}

// TestStandbyTakesOverAFrozenWritersLog: while the writer's lease is live
// a candidate is refused; once it expired (the writer's session and its
// advisory lock are still open) the candidate ends the old writer's
// sessions and takes over with the next epoch. The old writer's next
// commit fails and stores nothing, and the new one continues the tokens.
func TestStandbyTakesOverAFrozenWritersLog(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	old := mustOpen(t, dsn, frozen(time.Second))
	if _, err := appendRow(old, "events", `[1]`); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := NewCandidate(ctx, Options{DSN: dsn, ServerName: "hs.example", Streams: []string{"events", "caches"}, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.TryTakeOver(ctx); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "holds the lease until") {
		t.Fatalf("takeover while the lease is live: %v, want ErrLocked naming the lease", err)
	}
	var l *Log
	start := time.Now()
	for {
		if l, err = c.TryTakeOver(ctx); err == nil {
			break
		}
		if !errors.Is(err, ErrLocked) || time.Since(start) > 10*time.Second {
			t.Fatalf("takeover after the lease expired: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { _ = l.Close() })
	t.Logf("took over %s after the first refusal (lease TTL 1s)", time.Since(start).Round(time.Millisecond))
	if l.Epoch() != old.Epoch()+1 {
		t.Fatalf("epoch %d after takeover from epoch %d", l.Epoch(), old.Epoch())
	}
	if _, err := appendRow(old, "events", `[2]`); !errors.Is(err, ErrFailed) {
		t.Fatalf("append by the frozen writer after the takeover: %v, want ErrFailed", err)
	}
	u, err := appendRow(l, "events", `[2]`)
	if err != nil || u.Token != 2 {
		t.Fatalf("append by the new writer: token %d, %v; want 2", u.Token, err)
	}
	var n int64
	query(t, dsn, `SELECT count(*) FROM tcprepl_token WHERE rows = '[2]'`, &n)
	if n != 1 {
		t.Fatalf("row [2] stored %d times, want once (by the new writer only)", n)
	}
}

// TestExpiredLeaseRefusesTheCommit: a writer whose lease expired cannot
// commit even though no one took over yet and its session is intact: the
// check in the commit's transaction refuses it.
func TestExpiredLeaseRefusesTheCommit(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn, frozen(300*time.Millisecond))
	if _, err := appendRow(l, "events", `[1]`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	_, err := appendRow(l, "events", `[2]`)
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "the lease of epoch 1 expired") {
		t.Fatalf("commit with an expired lease: %v, want ErrFenced saying the lease expired", err)
	}
	var n int64
	query(t, dsn, `SELECT count(*) FROM tcprepl_token`, &n)
	if n != 1 {
		t.Fatalf("%d tokens stored, want 1", n)
	}
}

// TestFailedRenewalFencesTheLog: the writer stops on its own when it cannot
// renew, whether its lease was taken or its session to the database broke.
func TestFailedRenewalFencesTheLog(t *testing.T) {
	for name, tc := range map[string]struct {
		break_ string
		want   string
		fenced bool // another master took the lease: ErrFenced too
	}{
		"lease taken by another holder": {
			break_: `UPDATE tcprepl_lease SET holder = 'someone-else'`,
			want:   "expired or another master took it over",
			fenced: true,
		},
		"sessions ended": {
			break_: `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'tcprepl-%' AND datname = current_database()`,
			want:   "renewing it failed",
		},
	} {
		t.Run(name, func(t *testing.T) {
			dsn := pgtest.Shared(t).NewDatabase(t)
			l := mustOpen(t, dsn, func(o *Options) { o.LeaseTTL, o.LeaseRenewInterval = 2*time.Second, 100*time.Millisecond })
			if _, err := appendRow(l, "events", `[1]`); err != nil {
				t.Fatal(err)
			}
			query(t, dsn, tc.break_)
			select {
			case <-l.Failed():
			case <-time.After(5 * time.Second):
				t.Fatal("the log did not fence itself after its renewal failed")
			}
			err := l.Err()
			if !errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrFenced) != tc.fenced || !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Err() = %v, want ErrLeaseLost and ErrFailed saying %q (ErrFenced: %v)", err, tc.want, tc.fenced)
			}
			if _, err := appendRow(l, "events", `[2]`); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("append after self-fencing: %v, want ErrLeaseLost", err)
			}
		})
	}
}

// TestCloseGivesTheLeaseUp: after a clean stop a standby does not wait for
// the lease to expire.
func TestCloseGivesTheLeaseUp(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	a := mustOpen(t, dsn, func(o *Options) { o.LeaseTTL = time.Hour })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	var live bool
	query(t, dsn, `SELECT expires_at > now() FROM tcprepl_lease`, &live)
	if live {
		t.Fatal("the lease is still live after Close")
	}
	mustOpen(t, dsn)
}

// TestCandidateTakesOverWhenTheWriterSessionEnds: a standby polling on one
// session takes over as soon as the writer's sessions end (a killed
// process), without waiting for its lease to expire.
func TestCandidateTakesOverWhenTheWriterSessionEnds(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	old := mustOpen(t, dsn, func(o *Options) { o.LeaseTTL = time.Hour })
	ctx := context.Background()
	c, err := NewCandidate(ctx, Options{DSN: dsn, ServerName: "hs.example", Streams: []string{"events", "caches"}, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.TryTakeOver(ctx); !errors.Is(err, ErrLocked) {
		t.Fatalf("takeover while the writer is live: %v, want ErrLocked", err)
	}
	query(t, dsn, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'tcprepl-`+old.holder+`'`)
	start := time.Now()
	for {
		l, err := c.TryTakeOver(ctx)
		if err == nil {
			_ = l.Close()
			break
		}
		if !errors.Is(err, ErrLocked) || time.Since(start) > 5*time.Second {
			t.Fatalf("takeover after the writer's sessions ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("took over %s after the writer's sessions ended", time.Since(start).Round(time.Millisecond))
}

// TestLateRenewalFencesTheLog: a renewal due after the lease ran out (the
// process was frozen or starved past the TTL) is not even sent: the log
// fences itself, naming how long it went unrenewed.
func TestLateRenewalFencesTheLog(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn, func(o *Options) { o.LeaseTTL, o.LeaseRenewInterval = 300*time.Millisecond, 600*time.Millisecond })
	select {
	case <-l.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("the log did not fence itself when its renewal came after the lease ran out")
	}
	if err := l.Err(); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "not renewed for") {
		t.Fatalf("Err() = %v, want ErrLeaseLost saying how long it was not renewed", err)
	}
}

// TestLockWithoutLeaseWaits: a session holding the writer lock with no
// lease in anyone's name (a takeover between its lock and its commit) is
// waited for, never ended.
func TestLockWithoutLeaseWaits(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	c, err := NewCandidate(ctx, Options{DSN: dsn, ServerName: "hs.example", Streams: []string{"events"}, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close(ctx) }()
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock(hashtext('tcprepl writer'), hashtext('hs.example'))`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryTakeOver(ctx); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "no writer holds a lease yet") {
		t.Fatalf("takeover while a lease-less session holds the lock: %v, want ErrLocked", err)
	}
	if err := other.Ping(ctx); err != nil {
		t.Fatalf("the lock holder's session was ended: %v", err)
	}
}

// TestTakeoverAcrossRolesSaysWhatToGrant: ending the sessions of a frozen
// writer that connected as another role needs that role's membership or
// pg_signal_backend; the refusal says so.
func TestTakeoverAcrossRolesSaysWhatToGrant(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	name := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	srv.Exec(t, `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tcprepl_standby') THEN CREATE ROLE tcprepl_standby LOGIN; END IF; END $$`)
	mustOpen(t, dsn, frozen(300*time.Millisecond)) // as the superuser
	query(t, dsn, `GRANT CREATE, USAGE ON SCHEMA public TO tcprepl_standby; GRANT ALL ON ALL TABLES IN SCHEMA public TO tcprepl_standby`)
	ctx := context.Background()
	c, err := NewCandidate(ctx, Options{DSN: srv.DSNAs("tcprepl_standby", name), ServerName: "hs.example", Streams: []string{"events", "caches"}, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	time.Sleep(500 * time.Millisecond)
	_, err = c.TryTakeOver(ctx)
	if err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pg_signal_backend") {
		t.Fatalf("takeover from another role's frozen writer: %v, want the grant to make", err)
	}
}
