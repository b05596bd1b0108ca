package pglog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease defaults (masterapi log.leaseTTL, log.leaseRenewInterval).
const (
	DefaultLeaseTTL           = 2 * time.Second
	DefaultLeaseRenewInterval = 500 * time.Millisecond
)

// ErrLeaseLost is wrapped (with ErrFailed) when the writer could not renew
// its lease in time, or found it taken (then with ErrFenced too): it stops
// writing at once, since a standby may take the log over from then on.
var ErrLeaseLost = errors.New("the writer's lease was lost")

// The lease is what makes a frozen writer lose the log. The advisory lock
// goes only with the writer's session, and a process stopped with SIGSTOP
// (or a VM paused, or a node cut off while its TCP session lives on) keeps
// its session open. So the active writer also holds a row in
// tcprepl_lease, renewed every LeaseRenewInterval to expire LeaseTTL later
// by the database's clock. A standby that finds the lease expired ends the
// old writer's sessions (Candidate.acquire) and takes over with a new
// epoch. Every commit checks, in its own transaction, that its epoch is
// current and its lease unexpired (tcprepl_check_epoch), so a writer that
// resumes after its lease expired cannot commit a row, even before anyone
// took over; and the writer itself stops (self-fences) as soon as a renewal
// fails or its lease is past due by its own clock, measured from when the
// last successful renewal was sent, which is never later than the
// database's.
type leaseState struct {
	ttl, every time.Duration
	conn       *pgx.Conn
	// validUntil is owned by the renewer once it runs.
	validUntil time.Time
	stop       chan struct{}
	done       chan struct{}
	stopOnce   sync.Once
}

func (l *Log) leaseDurations() (ttl, every time.Duration) {
	ttl, every = l.opts.LeaseTTL, l.opts.LeaseRenewInterval
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if every <= 0 {
		every = min(DefaultLeaseRenewInterval, ttl/4)
	}
	return ttl, every
}

// takeLease makes this writer the lease holder, in the takeover's
// transaction (after the epoch moved on).
func (l *Log) takeLease(ctx context.Context, tx pgx.Tx) error {
	ttl, every := l.leaseDurations()
	l.lease.ttl, l.lease.every = ttl, every
	sent := time.Now()
	if _, err := tx.Exec(ctx, `INSERT INTO tcprepl_lease (server_name, holder, epoch, expires_at)
		VALUES ($1, $2, $3, now() + $4 * interval '1 microsecond')
		ON CONFLICT (server_name) DO UPDATE SET holder = EXCLUDED.holder, epoch = EXCLUDED.epoch, expires_at = EXCLUDED.expires_at`,
		l.opts.ServerName, l.holder, l.epoch, ttl.Microseconds()); err != nil {
		return schemaError("take the writer's lease", err)
	}
	l.lease.validUntil = sent.Add(ttl)
	return nil
}

// startLease opens the lease's own session (renewals must not queue behind
// a large commit or busy catch-up reads) and starts the renewer.
func (l *Log) startLease(ctx context.Context) error {
	cfg, err := connConfig(l.opts.DSN, l.holder)
	if err != nil {
		return err
	}
	if l.lease.conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
		return fmt.Errorf("connect the lease session: %w", err)
	}
	l.lease.stop, l.lease.done = make(chan struct{}), make(chan struct{})
	go l.renewLoop()
	return nil
}

// renewLoop renews the lease every interval until the log closes or
// fails; it self-fences the log when a renewal fails or comes too late.
func (l *Log) renewLoop() {
	defer close(l.lease.done)
	t := time.NewTicker(l.lease.every)
	defer t.Stop()
	for {
		select {
		case <-l.lease.stop:
			return
		case <-l.failedCh:
			return
		case <-t.C:
		}
		if err := l.renew(); err != nil {
			l.fence(err)
			return
		}
	}
}

// renew extends the lease once. A lease that expired is not renewed even
// if no one took it: from its expiry on, a standby may be ending this
// writer's sessions.
func (l *Log) renew() error {
	ls := &l.lease
	sent := time.Now()
	if !sent.Before(ls.validUntil) {
		return fmt.Errorf("%w: not renewed for %s (the lease lasts %s): the process was frozen, starved or cut off from PostgreSQL, and a standby may have taken over",
			ErrLeaseLost, sent.Sub(ls.validUntil.Add(-ls.ttl)).Round(time.Millisecond), ls.ttl)
	}
	ctx, cancel := context.WithDeadline(context.Background(), ls.validUntil)
	defer cancel()
	tag, err := ls.conn.Exec(ctx, `UPDATE tcprepl_lease SET expires_at = now() + $4 * interval '1 microsecond'
		WHERE server_name = $1 AND holder = $2 AND epoch = $3 AND expires_at >= now()`,
		l.opts.ServerName, l.holder, l.epoch, ls.ttl.Microseconds())
	if err != nil {
		return fmt.Errorf("%w: renewing it failed: %w", ErrLeaseLost, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: %w: it expired or another master took it over (this writer took over at epoch %d)", ErrLeaseLost, ErrFenced, l.epoch)
	}
	ls.validUntil = sent.Add(ls.ttl)
	return nil
}

// fence fails the log for good, as a fenced commit does: every append and
// trim is refused from now on, and Failed is closed so that the master
// stops serving.
func (l *Log) fence(cause error) {
	err := fmt.Errorf("%w: %w (this master stops writing and becomes a standby)", ErrFailed, cause)
	if l.failed.CompareAndSwap(nil, &err) {
		close(l.failedCh)
		l.log.Error(err, "fenced: refusing further appends")
	}
}

// stopLease stops the renewer, gives the lease up (so that a standby need
// not wait for it to expire) unless it was lost, and closes its session.
func (l *Log) stopLease() {
	ls := &l.lease
	if ls.conn == nil {
		return
	}
	ls.stopOnce.Do(func() { close(ls.stop) })
	<-ls.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if l.Err() == nil {
		if _, err := ls.conn.Exec(ctx, `UPDATE tcprepl_lease SET expires_at = now() WHERE server_name = $1 AND holder = $2 AND epoch = $3`,
			l.opts.ServerName, l.holder, l.epoch); err != nil {
			l.log.V(1).Info("giving the lease up failed; it expires by itself", "error", err.Error())
		}
	}
	_ = ls.conn.Close(ctx)
}
