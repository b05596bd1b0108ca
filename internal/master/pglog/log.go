// Package pglog is the master's stream log on PostgreSQL: the same contract
// as the Pebble log (internal/master/streamlog), kept in a database that is
// replicated and backed up on its own, so that the log outlives the master's
// node.
//
// Appends are group-committed: one committer goroutine gathers whatever
// appends are pending, assigns their tokens and writes them in one
// transaction, pipelined in one round trip (BEGIN, the fencing check, one
// INSERT of every token, COMMIT). Options.CommitConnections lets
// several such transactions overlap on separate connections, acknowledged
// in token order (commit.go); by default one is in flight at a time. Only once COMMIT
// succeeded do the tokens become visible (CurrentToken, ReadAfter), go to
// OnDurable in token order and are their appends acknowledged.
//
// Exactly one master writes a log. It holds a session advisory lock keyed by
// its server name on the write connection, and at takeover it increments
// the log's epoch; every write transaction first checks, under a row lock,
// that the epoch is still the one it took over with (tcprepl_check_epoch),
// so a master that lost the log (its session was ended, or it was frozen
// while another took over) cannot commit another row: the check aborts the
// transaction and the log fails with ErrFenced. The writer also holds a
// lease that a standby can take over while the old writer's session is
// still open (lease.go, takeover.go).
package pglog

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tcprepl/tcprepl/internal/master/logmem"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// ErrClosed is returned by operations on a closed Log: the Pebble log's, so
// that callers and the shared behaviour suite test one error.
var ErrClosed = streamlog.ErrClosed

// ErrFailed is wrapped by every append after a commit failed.
var ErrFailed = errors.New("stream log failed")

// ErrFenced is wrapped when another master took the log over: this one may
// not write another row.
var ErrFenced = errors.New("another master took over the stream log")

// ErrLocked is wrapped by Open when another master holds the log's lock.
var ErrLocked = errors.New("another master holds the stream log")

// Retention bounds what a stream keeps; zero fields mean no bound. MaxRows
// and MaxAge are as in streamlog.Retention; MaxBytes counts the row bytes
// stored (PostgreSQL's own overhead and TOAST compression aside), whole
// tokens dropped oldest first, the newest always kept.
type Retention struct {
	MaxRows  int64
	MaxAge   time.Duration
	MaxBytes int64
}

// Options configure Open.
type Options struct {
	// DSN is the PostgreSQL connection URI or keyword/value string.
	DSN string
	// ServerName is the master's server name: the key of the writer's
	// advisory lock, and recorded with the log so that two servers never
	// share one database.
	ServerName string
	// Streams are the streams served, in the order Streams() reports them.
	Streams []string

	Retention        map[string]Retention
	DefaultRetention Retention
	// TrimInterval is how often retention is applied; zero means 10s,
	// negative disables the trimmer (call ApplyRetention).
	TrimInterval time.Duration

	// Now is the clock for publish times and retention by age; nil means
	// time.Now.
	Now    func() time.Time
	Logger logr.Logger

	// MaxCommitBytes caps the row bytes of one group commit; zero means
	// 32 MiB. A single larger append still commits, on its own.
	MaxCommitBytes int
	// CommitConnections is how many group commits may be in flight at
	// once, each on its own connection (commit.go); zero means
	// DefaultCommitConnections, at most MaxCommitConnections.
	CommitConnections int
	// MaxLineLength, when positive, refuses rows whose RDATA line could be
	// longer (replication.CheckRDATARow).
	MaxLineLength int
	// TailCacheBytes is the memory for the most recent updates of all
	// streams; zero means 64 MiB, negative disables it.
	TailCacheBytes int64
	// OnDurable, when set, receives every update once it is committed and
	// visible; see Log.OnDurable.
	OnDurable func(replication.Update)

	// LeaseTTL and LeaseRenewInterval: see lease.go; zero means
	// DefaultLeaseTTL and DefaultLeaseRenewInterval.
	LeaseTTL           time.Duration
	LeaseRenewInterval time.Duration
}

// Log is the stream log on PostgreSQL. It is safe for concurrent use.
type Log struct {
	opts    Options
	log     logr.Logger
	now     func() time.Time
	streams map[string]*streamState
	order   []string

	// write is the committer's connection, holding the advisory lock.
	write *pgx.Conn
	// commitConns are the further connections commits overlap on
	// (commit.go).
	commitConns []*pgx.Conn
	// pool serves reads and trims.
	pool  *pgxpool.Pool
	epoch int64
	id    string
	// holder names this writer incarnation: its lease and the
	// application_name of its sessions (lease.go).
	holder string
	lease  leaseState

	maxCommitBytes int
	maxLineLength  int
	cacheBudget    int64
	cacheBytes     atomic.Int64

	onDurable atomic.Pointer[func(replication.Update)]
	failed    atomic.Pointer[error]
	failedCh  chan struct{}

	reqs    chan *appendReq
	closeMu sync.RWMutex
	closed  bool
	done    chan struct{}

	trimMu   sync.Mutex
	trimStop chan struct{}
	trimDone chan struct{}
}

type streamState struct {
	name     string
	current  atomic.Int64
	cum      atomic.Int64
	lastTime atomic.Int64
	retained atomic.Pointer[retainedState]

	// Committer-owned.
	assigned, pendingCum, pendingT, pendingBytes int64

	tail logmem.Tail
	rate logmem.Rate
}

// retainedState is a stream's retention state, swapped whole.
type retainedState struct {
	oldest       int64
	trimmedCum   int64
	trimmedTime  int64
	trimmedBytes int64
}

// Open connects, creates or migrates the schema, takes the log's writer
// lock and lease, takes the log over (a new epoch) and recovers every
// stream's position. It is one attempt: a live writer makes it fail with
// ErrLocked (a standby keeps a Candidate and polls instead).
func Open(ctx context.Context, opts Options) (*Log, error) {
	c, err := NewCandidate(ctx, opts)
	if err != nil {
		return nil, err
	}
	l, err := c.TryTakeOver(ctx)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return l, nil
}

// newLog checks the options and builds a Log with no connection yet.
func newLog(opts Options) (*Log, error) {
	if len(opts.Streams) == 0 {
		return nil, errors.New("open stream log: no streams configured; pass at least one stream name")
	}
	if opts.ServerName == "" {
		return nil, errors.New("open stream log: no server name; it keys the writer lock")
	}
	l := &Log{
		opts:           opts,
		log:            opts.Logger,
		now:            opts.Now,
		streams:        map[string]*streamState{},
		maxCommitBytes: opts.MaxCommitBytes,
		maxLineLength:  opts.MaxLineLength,
		failedCh:       make(chan struct{}),
		reqs:           make(chan *appendReq, 1024),
		done:           make(chan struct{}),
		trimStop:       make(chan struct{}),
		trimDone:       make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.maxCommitBytes <= 0 {
		l.maxCommitBytes = 32 << 20
	}
	switch {
	case opts.TailCacheBytes == 0:
		l.cacheBudget = 64 << 20
	case opts.TailCacheBytes > 0:
		l.cacheBudget = opts.TailCacheBytes
	}
	if opts.OnDurable != nil {
		l.OnDurable(opts.OnDurable)
	}
	for _, name := range opts.Streams {
		if name == "" || bytes.IndexByte([]byte(name), 0) >= 0 {
			return nil, fmt.Errorf("open stream log: invalid stream name %q; names must be non-empty and contain no NUL byte", name)
		}
		if _, dup := l.streams[name]; dup {
			return nil, fmt.Errorf("open stream log: stream %q configured twice; list each stream once", name)
		}
		l.streams[name] = &streamState{name: name}
		l.order = append(l.order, name)
	}
	return l, nil
}

// start opens the read pool and the lease session and starts the
// committer, the trimmer and the lease renewer of a log just taken over.
func (l *Log) start(ctx context.Context) error {
	pcfg, err := poolConfig(l.opts.DSN, l.holder)
	if err != nil {
		return fmt.Errorf("open stream log: %w", err)
	}
	l.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("open stream log: connection pool: %w", err)
	}
	if err := l.startLease(ctx); err != nil {
		l.pool.Close()
		return fmt.Errorf("open stream log: %w", err)
	}
	go l.commitLoop()
	every := l.opts.TrimInterval
	if every == 0 {
		every = 10 * time.Second
	}
	if every > 0 {
		go l.trimLoop(every)
	} else {
		close(l.trimDone)
	}
	return nil
}

// takeOver, with the writer lock held (Candidate), creates or checks the
// log's identity, starts a new epoch, takes the lease and recovers
// positions.
func (l *Log) takeOver(ctx context.Context) error {
	tx, err := l.write.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin takeover: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var server string
	err = tx.QueryRow(ctx, `UPDATE tcprepl_log SET epoch = epoch + 1 RETURNING log_id, server_name, epoch`).Scan(&l.id, &server, &l.epoch)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		var b [16]byte
		_, _ = rand.Read(b[:])
		l.id, server, l.epoch = hex.EncodeToString(b[:]), l.opts.ServerName, 1
		if _, err := tx.Exec(ctx, `INSERT INTO tcprepl_log (log_id, server_name, epoch) VALUES ($1, $2, $3)`, l.id, server, l.epoch); err != nil {
			return schemaError("create the log's identity", err)
		}
	case err != nil:
		return schemaError("start a new writer epoch", err)
	}
	if server != l.opts.ServerName {
		return fmt.Errorf("the database holds the stream log of server %q, not %q: give each server its own database", server, l.opts.ServerName)
	}
	if err := l.takeLease(ctx, tx); err != nil {
		return err
	}
	for _, name := range l.order {
		if err := l.recoverStream(ctx, tx, l.streams[name]); err != nil {
			return fmt.Errorf("recover stream %q: %w", name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit takeover: %w", err)
	}
	l.log.Info("took over the stream log", "logID", l.id, "epoch", l.epoch)
	return nil
}

func (l *Log) recoverStream(ctx context.Context, tx pgx.Tx, st *streamState) error {
	if _, err := tx.Exec(ctx, `INSERT INTO tcprepl_stream (stream) VALUES ($1) ON CONFLICT DO NOTHING`, st.name); err != nil {
		return schemaError("record stream", err)
	}
	if err := l.dropAfterGap(ctx, tx, st.name); err != nil {
		return err
	}
	var r retainedState
	if err := tx.QueryRow(ctx, `SELECT oldest, trimmed_cum, trimmed_time, trimmed_bytes FROM tcprepl_stream WHERE stream = $1`, st.name).Scan(&r.oldest, &r.trimmedCum, &r.trimmedTime, &r.trimmedBytes); err != nil {
		return fmt.Errorf("read retention state: %w", err)
	}
	current, cum, last, stored := r.oldest-1, r.trimmedCum, r.trimmedTime, int64(0)
	err := tx.QueryRow(ctx, `SELECT token, cum, published_ns, bytes_before + octet_length(rows) FROM tcprepl_token WHERE stream = $1 ORDER BY token DESC LIMIT 1`, st.name).Scan(&current, &cum, &last, &stored)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read newest token: %w", err)
	}
	if current < r.oldest-1 {
		return fmt.Errorf("newest token %d is older than the oldest retained token %d", current, r.oldest)
	}
	st.retained.Store(&r)
	st.current.Store(current)
	st.cum.Store(cum)
	st.lastTime.Store(last)
	st.assigned, st.pendingCum, st.pendingT = current, cum, last
	if errors.Is(err, pgx.ErrNoRows) {
		// Everything was trimmed: bytes restart from the stream's byte
		// count as the last trim left it, which only retention reads.
		stored = r.trimmedBytes
	}
	st.pendingBytes = stored
	return nil
}

func (l *Log) stream(name string) (*streamState, error) {
	st, ok := l.streams[name]
	if !ok {
		return nil, fmt.Errorf("stream %q: %w", name, replication.ErrUnknownStream)
	}
	return st, nil
}

// LogID is the log's identity, kept in the database: the same for every
// master that opens it, different for a new database.
func (l *Log) LogID() string { return l.id }

// Epoch is the writer epoch this log took over with.
func (l *Log) Epoch() int64 { return l.epoch }

// Err returns the failure that stopped the log, nil while it is healthy.
func (l *Log) Err() error {
	if f := l.failed.Load(); f != nil {
		return *f
	}
	return nil
}

// Failed is closed when a commit fails; the log then refuses every append
// until the master restarts and re-reads what the database holds.
func (l *Log) Failed() <-chan struct{} { return l.failedCh }

// fail records the first commit failure and returns the error to report.
func (l *Log) fail(cause error) error {
	var err error
	var pgErr *pgconn.PgError
	if errors.As(cause, &pgErr) && pgErr.Code == fencedCode {
		err = fmt.Errorf("%w: %w: %w (this master stops writing; the other one serves the log)", ErrFailed, ErrFenced, cause)
	} else {
		err = fmt.Errorf("%w: commit to PostgreSQL: %w (whether the last transaction committed is unknown: this master stops writing, and re-reads what was stored when it next takes the log over)", ErrFailed, cause)
	}
	if l.failed.CompareAndSwap(nil, &err) {
		close(l.failedCh)
		l.log.Error(err, "group commit failed; refusing further appends")
		return err
	}
	return *l.failed.Load()
}

// OnDurable makes the log hand every committed update to h, before its
// append returns, in token order per stream (streamlog.Log.OnDurable). h must
// not block.
func (l *Log) OnDurable(h func(replication.Update)) {
	if h == nil {
		l.onDurable.Store(nil)
		return
	}
	l.onDurable.Store(&h)
}

// Streams lists the configured streams in their configured order.
func (l *Log) Streams() []string { return slices.Clone(l.order) }

// CurrentToken returns the newest committed token of the stream.
func (l *Log) CurrentToken(stream string) (int64, error) {
	st, err := l.stream(stream)
	if err != nil {
		return 0, err
	}
	return st.current.Load(), nil
}

// AppendEncoded stores rows already in wire form (replication.AppendPythonJSON)
// as one new token of stream and returns once its transaction committed.
// It refuses rows that could break the protocol's framing. ctx is honoured
// only until the append is queued.
func (l *Log) AppendEncoded(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error) {
	st, err := l.stream(stream)
	if err != nil {
		return replication.Update{}, fmt.Errorf("append: %w", err)
	}
	if len(rows) == 0 {
		return replication.Update{}, fmt.Errorf("append to stream %q: no rows; send at least one row", stream)
	}
	size := 0
	for i, r := range rows {
		if l.maxLineLength > 0 {
			if err := replication.CheckRDATARow(stream, r, l.maxLineLength); errors.Is(err, replication.ErrRowTooLong) {
				return replication.Update{}, fmt.Errorf("append to stream %q: row %d: %w", stream, i, err)
			}
		}
		if len(r) == 0 || r[0] != '[' || bytes.IndexByte(r, '\n') >= 0 || bytes.IndexByte(r, '\r') >= 0 {
			return replication.Update{}, fmt.Errorf("append to stream %q: row %d: not in wire form (one line, a JSON array as replication.AppendPythonJSON writes it), got %.64q", stream, i, r)
		}
		size += len(r)
	}
	// One buffer: the stored value (rows joined by '\n') and the rows
	// handed back, which are slices of it.
	buf := make([]byte, 0, size+len(rows))
	own := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		if i > 0 {
			buf = append(buf, '\n')
		}
		start := len(buf)
		buf = append(buf, r...)
		own[i] = buf[start:len(buf):len(buf)]
	}
	return l.appendWire(ctx, st, own, buf)
}

// Append is AppendEncoded for rows in any JSON form: they are re-encoded in
// wire form first.
func (l *Log) Append(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error) {
	wire := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		b, err := replication.AppendPythonJSON(nil, r)
		if err != nil {
			return replication.Update{}, fmt.Errorf("append to stream %q: row %d: not valid JSON: %w", stream, i, err)
		}
		wire[i] = b
	}
	return l.AppendEncoded(ctx, stream, wire)
}

type appendReq struct {
	st    *streamState
	rows  []json.RawMessage
	value []byte
	done  chan struct{}
	token int64
	time  time.Time
	err   error
}

func (l *Log) appendWire(ctx context.Context, st *streamState, rows []json.RawMessage, value []byte) (replication.Update, error) {
	if err := ctx.Err(); err != nil {
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", st.name, err)
	}
	if err := l.Err(); err != nil {
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", st.name, err)
	}
	req := &appendReq{st: st, rows: rows, value: value, done: make(chan struct{})}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", st.name, ErrClosed)
	}
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", st.name, ctx.Err())
	}
	l.closeMu.RUnlock()
	<-req.done
	if req.err != nil {
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", st.name, req.err)
	}
	return replication.Update{Stream: st.name, Token: req.token, Rows: rows, Time: req.time}, nil
}

// closeWrite releases the writer lock and closes the write session. The
// unlock is explicit: the server ends a closed session's backend (and its
// locks) a moment after the connection closes, and a master started right
// after this one closed would find the lock still held.
func (l *Log) closeWrite() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !l.write.IsClosed() {
		if _, err := l.write.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
			l.log.V(1).Info("releasing the writer lock failed; PostgreSQL releases it when the session ends", "error", err.Error())
		}
	}
	_ = l.write.Close(ctx)
}

// commitTimeout bounds one group commit: a database that stops answering
// fails the log rather than holding every publisher forever.
const commitTimeout = 30 * time.Second

// commit writes one round in one pipelined transaction. COMMIT of a
// transaction that failed (the fencing check, a duplicate token) answers
// ROLLBACK, which is checked too.
func (l *Log) commit(conn *pgx.Conn, streams []string, tokens, published []int64, nRows []int32, cums, before []int64, values [][]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SELECT tcprepl_check_epoch($1)`, l.epoch)
	all, offsets, lengths := concatValues(values)
	b.Queue(insertTokensSQL, streams, tokens, published, nRows, cums, before, all, offsets, lengths)
	b.Queue(`COMMIT`)
	res := conn.SendBatch(ctx, b)
	var errs []error
	for range 3 {
		if _, err := res.Exec(); err != nil {
			errs = append(errs, err)
		}
	}
	tag, err := res.Exec()
	if cerr := res.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if len(errs) > 0 {
		// The first error is the cause; the later ones say the
		// transaction was aborted.
		if !conn.IsClosed() && conn.PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
		return errs[0]
	}
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("PostgreSQL answered %q to COMMIT", tag.String())
	}
	return nil
}

// cache adds a committed update to its stream's tail cache and keeps all
// caches within the budget.
func (l *Log) cache(st *streamState, u replication.Update) {
	if l.cacheBudget <= 0 {
		return
	}
	l.cacheBytes.Add(st.tail.Add(u))
	for l.cacheBytes.Load() > l.cacheBudget {
		freed := st.tail.EvictOldest()
		if freed == 0 {
			return
		}
		l.cacheBytes.Add(-freed)
	}
}

// Close stops the trimmer, commits every append already queued and closes
// the connections; the writer lock goes with the write session.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return ErrClosed
	}
	l.closed = true
	close(l.reqs)
	l.closeMu.Unlock()
	close(l.trimStop)
	<-l.trimDone
	<-l.done
	l.stopLease()
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	l.pool.Close()
	return nil
}

var _ replication.Source = (*Log)(nil)

// StreamStats is the Pebble log's type: the master reports both alike.
type StreamStats = streamlog.StreamStats
