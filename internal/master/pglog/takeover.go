package pglog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lockWait bounds how long a takeover waits for the writer lock after it
// ended the sessions of a writer whose lease expired: PostgreSQL releases
// an ended backend's locks within milliseconds.
const lockWait = 2 * time.Second

// Candidate is a master that wants to write the log: connected, the schema
// migrated, ready to take the log over as soon as no live writer holds it.
// A standby keeps one and calls TryTakeOver every poll interval, so polling
// costs one or two queries on an open session rather than a new one.
type Candidate struct {
	opts   Options
	holder string
	conn   *pgx.Conn
}

// NewCandidate connects (with keep-alives, session.go) and creates or
// migrates the schema.
func NewCandidate(ctx context.Context, opts Options) (*Candidate, error) {
	if _, err := newLog(opts); err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c := &Candidate{opts: opts, holder: hex.EncodeToString(b[:])}
	cfg, err := connConfig(opts.DSN, c.holder)
	if err != nil {
		return nil, fmt.Errorf("open stream log: %w", err)
	}
	c.conn, err = pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open stream log: connect to PostgreSQL at %s:%d: %w (check the server is up and the DSN is right)", cfg.Host, cfg.Port, err)
	}
	if err := migrate(ctx, c.conn); err != nil {
		_ = c.conn.Close(context.Background())
		return nil, fmt.Errorf("open stream log: %w", err)
	}
	return c, nil
}

// Close closes the candidate's session; after a successful TryTakeOver the
// session belongs to the log and Close does nothing.
func (c *Candidate) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close(context.Background())
	c.conn = nil
	return err
}

// TryTakeOver takes the log over if no live writer holds it: the writer
// lock is free (the old writer's session ended: a clean stop, a killed
// process, a connection that keep-alives gave up on), or the old writer's
// lease expired (a frozen or partitioned process whose session is still
// open): its sessions are then ended first. It returns ErrLocked while a
// writer holds a live lease; any other error means the session may be
// unusable, and the caller closes the candidate and makes a new one.
func (c *Candidate) TryTakeOver(ctx context.Context) (*Log, error) {
	if c.conn == nil {
		return nil, errors.New("open stream log: the candidate is closed")
	}
	l, err := newLog(c.opts)
	if err != nil {
		return nil, err
	}
	if err := c.acquire(ctx); err != nil {
		return nil, fmt.Errorf("open stream log: %w", err)
	}
	l.write, l.holder = c.conn, c.holder
	if err := l.takeOver(ctx); err != nil {
		c.unlock()
		return nil, fmt.Errorf("open stream log: %w", err)
	}
	if err := l.start(ctx); err != nil {
		c.unlock()
		return nil, err
	}
	c.conn = nil // the log owns the session now
	return l, nil
}

func (c *Candidate) unlock() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = c.conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
}

func (c *Candidate) tryLock(ctx context.Context) (bool, error) {
	var locked bool
	if err := c.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('tcprepl writer'), hashtext($1))`, c.opts.ServerName).Scan(&locked); err != nil {
		return false, fmt.Errorf("take the writer lock: %w", err)
	}
	return locked, nil
}

// acquire takes the writer lock, ending the sessions of a writer whose
// lease expired.
func (c *Candidate) acquire(ctx context.Context) error {
	if locked, err := c.tryLock(ctx); err != nil || locked {
		return err
	}
	var holder string
	var live bool
	var expires time.Time
	err := c.conn.QueryRow(ctx, `SELECT holder, expires_at >= now(), expires_at FROM tcprepl_lease WHERE server_name = $1`, c.opts.ServerName).Scan(&holder, &live, &expires)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%w (server name %q): a session holds the writer lock but no writer holds a lease yet (a takeover in progress); waiting", ErrLocked, c.opts.ServerName)
	case err != nil:
		return fmt.Errorf("read the writer's lease: %w", err)
	case live:
		return fmt.Errorf("%w (server name %q): writer %s holds the lease until %s; waiting for it to stop renewing", ErrLocked, c.opts.ServerName, holder, expires.UTC().Format(time.RFC3339Nano))
	}
	// The lease expired but the writer's session is open: the process is
	// frozen or cut off. End its sessions, so that its lock goes and any
	// transaction it has open is rolled back; the condition is checked
	// again in the same statement, so a writer that renewed meanwhile
	// keeps its sessions.
	var ended int
	err = c.conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid))
		FROM pg_stat_activity a JOIN tcprepl_lease l ON a.application_name = $2 || l.holder
		WHERE l.server_name = $1 AND l.holder = $3 AND l.expires_at < now()
			AND a.datname = current_database() AND a.pid <> pg_backend_pid()`,
		c.opts.ServerName, applicationName(""), holder).Scan(&ended)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("end the sessions of writer %s, whose lease expired at %s: %w (every master of a server must connect as the same role, or its role needs pg_signal_backend)", holder, expires.UTC().Format(time.RFC3339Nano), err)
		}
		return fmt.Errorf("end the sessions of writer %s, whose lease expired at %s: %w", holder, expires.UTC().Format(time.RFC3339Nano), err)
	}
	c.opts.Logger.Info("the writer's lease expired; ended its sessions to take the log over", "holder", holder, "expiredAt", expires, "sessionsEnded", ended)
	deadline := time.Now().Add(lockWait)
	for {
		locked, err := c.tryLock(ctx)
		if err != nil || locked {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (server name %q): the lease of writer %s expired but its lock is still held %s after ending its sessions; retrying", ErrLocked, c.opts.ServerName, holder, lockWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
