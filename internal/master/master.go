// Package master is the tcprepl master process: it owns the durable stream
// log, validates and publishes rows, fans them out over the replication
// protocol, gives client commands their effects, and serves the HTTP API
// (publish, positions, connection table, metrics, health).
package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// ErrShuttingDown is returned by Publish once Shutdown has begun.
var ErrShuttingDown = errors.New("master is shutting down")

// RowError says which row of a publish request is bad and why; the wrapped
// error names the field.
type RowError struct {
	Index int
	Err   error
}

func (e *RowError) Error() string { return fmt.Sprintf("row %d: %v", e.Index, e.Err) }
func (e *RowError) Unwrap() error { return e.Err }

// Options are the parts of a Master that are not configuration.
type Options struct {
	Logger logr.Logger
	// Now is the clock; nil means time.Now. Tests inject one to control
	// presence and cache timestamps.
	Now func() time.Time
	// Registry receives every metric and is what /metrics serves; nil
	// creates a fresh one, so that several masters can live in one test.
	Registry *prometheus.Registry
	// Log, Validate and NewServer replace the real parts (wire.go) in tests.
	Log       StreamLog
	Validate  RowValidator
	NewServer func(cfg Config, src replication.Source, effects *Effects, reg prometheus.Registerer, logger logr.Logger) (ReplicationServer, error)
}

// Master is one running master: log, protocol server and HTTP API.
type Master struct {
	cfg          Config
	logger       logr.Logger
	now          func() time.Time
	store        StreamLog
	validate     RowValidator
	srv          ReplicationServer
	registry     *prometheus.Registry
	metrics      *metrics
	effects      *Effects
	publishToken string
	streams      []string
	seq          map[string]*sequencer
	httpSrv      *http.Server

	// storeMu is held shared by every append and exclusively by Close, so
	// the log is closed only after the last append has returned, and no
	// append starts on a closed log.
	storeMu     sync.RWMutex
	storeClosed bool
	closing     atomic.Bool
	serving     atomic.Bool
	closeOnce   sync.Once
	closeErr    error
}

// New opens the log and builds the protocol server and HTTP API. Nothing
// listens until Serve or Run.
func New(cfg Config, opts Options) (*Master, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid master config: %w", err)
	}
	token, err := cfg.PublishToken()
	if err != nil {
		return nil, err
	}
	m := &Master{
		cfg:          cfg,
		logger:       opts.Logger,
		now:          opts.Now,
		registry:     opts.Registry,
		publishToken: token,
		streams:      cfg.Streams(),
		seq:          map[string]*sequencer{},
		validate:     opts.Validate,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.registry == nil {
		m.registry = prometheus.NewRegistry()
	}
	if m.validate == nil {
		if m.validate, err = defaultValidator(cfg); err != nil {
			return nil, err
		}
	}
	m.store = opts.Log
	if m.store == nil {
		if m.store, err = openLog(cfg, m.logger, m.now); err != nil {
			return nil, err
		}
	}
	// From here on, a failure must close the log we opened.
	fail := func(err error) (*Master, error) {
		if opts.Log == nil {
			_ = m.store.Close()
		}
		return nil, err
	}
	for _, s := range m.streams {
		cur, err := m.store.CurrentToken(s)
		if err != nil {
			return fail(fmt.Errorf("read position of stream %s: %w", s, err))
		}
		m.seq[s] = &sequencer{next: cur + 1, pending: map[int64]replication.Update{}}
	}
	m.metrics, err = newMetrics(m)
	if err != nil {
		return fail(err)
	}
	m.effects = newEffects(m)
	newServer := opts.NewServer
	if newServer == nil {
		newServer = newReplicationServer
	}
	m.srv, err = newServer(cfg, m.store, m.effects, m.registry, m.logger.WithName("replication"))
	if err != nil {
		return fail(fmt.Errorf("create replication server: %w", err))
	}
	m.httpSrv = &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// A publish waits for fsync; generous, but bounded so a stuck
		// client cannot hold a connection forever.
		ReadTimeout:  time.Minute,
		WriteTimeout: time.Minute,
		IdleTimeout:  2 * time.Minute,
	}
	return m, nil
}

// Config returns the effective configuration (defaults applied).
func (m *Master) Config() Config { return m.cfg }

// Registry is the Prometheus registry /metrics serves.
func (m *Master) Registry() *prometheus.Registry { return m.registry }

// Run listens on the configured addresses and serves until ctx is done,
// then shuts down gracefully, giving in-flight work shutdownTimeout.
func (m *Master) Run(ctx context.Context, shutdownTimeout time.Duration) error {
	var lc net.ListenConfig
	replLn, err := lc.Listen(ctx, "tcp", m.cfg.ReplicationListen)
	if err != nil {
		_ = m.closeStore()
		return fmt.Errorf("listen for replication on %s: %w", m.cfg.ReplicationListen, err)
	}
	httpLn, err := lc.Listen(ctx, "tcp", m.cfg.HTTPListen)
	if err != nil {
		_ = replLn.Close()
		_ = m.closeStore()
		return fmt.Errorf("listen for HTTP on %s: %w", m.cfg.HTTPListen, err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(replLn, httpLn) }()
	select {
	case err := <-done:
		// A listener failed on its own; Serve has already shut down.
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutErr := m.Shutdown(sctx)
	return errors.Join(shutErr, <-done)
}

// Serve serves replication on replLn and HTTP on httpLn until Shutdown. It
// returns nil after a clean Shutdown; if either listener fails it shuts the
// whole master down and returns that failure.
func (m *Master) Serve(replLn, httpLn net.Listener) error {
	m.logger.Info("master serving", "serverName", m.cfg.ServerName,
		"replication", replLn.Addr().String(), "http", httpLn.Addr().String(),
		"dataDir", m.cfg.DataDir, "ephemeral", m.cfg.Ephemeral, "streams", len(m.streams))
	if m.publishToken == "" && !isLoopback(httpLn.Addr()) {
		m.logger.Info("WARNING: publishing needs no token and the HTTP API listens beyond loopback: anyone who reaches it can publish rows; set publishTokenFile or "+PublishTokenEnv,
			"http", httpLn.Addr().String())
	}
	m.serving.Store(true)
	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		m.watchLog(stopWatch)
	}()
	errc := make(chan error, 2)
	go func() {
		err := m.srv.Serve(replLn)
		if errors.Is(err, errServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("replication server: %w", err)
		}
		errc <- err
	}()
	go func() {
		err := m.httpSrv.Serve(httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("HTTP server: %w", err)
		}
		errc <- err
	}()
	first := <-errc
	if first != nil && !m.closing.Load() {
		// One side died on its own: take the other down too, so the
		// process exits and its supervisor restarts it.
		m.logger.Error(first, "listener failed; shutting down")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = m.Shutdown(ctx)
		cancel()
	}
	second := <-errc
	// If the watcher is shutting the master down, let it finish closing
	// the log before returning.
	close(stopWatch)
	<-watchDone
	m.serving.Store(false)
	// A failed log ends the process with an error, so it is restarted.
	return errors.Join(first, second, m.logFailure())
}

// Shutdown stops accepting, lets in-flight publishes finish, sends every
// replication connection `ERROR server shutting down`, records the users
// of those connections as offline, then flushes and closes the log.
func (m *Master) Shutdown(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.closing.Store(true)
		m.logger.Info("master shutting down")
		var errs []error
		if err := m.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop HTTP server: %w", err))
		}
		if err := m.srv.Shutdown(ctx); err != nil && !errors.Is(err, errServerClosed) {
			errs = append(errs, fmt.Errorf("stop replication server: %w", err))
		}
		// ConnectionClosed callbacks publish offline presence rows; they
		// have run once the server's Shutdown has returned, and closeStore
		// waits for any append still in flight.
		if err := m.closeStore(); err != nil {
			errs = append(errs, err)
		}
		m.closeErr = errors.Join(errs...)
		if m.closeErr != nil {
			m.logger.Error(m.closeErr, "shutdown incomplete")
		} else {
			m.logger.Info("master stopped; log flushed")
		}
	})
	return m.closeErr
}

// isLoopback reports whether a listener's address is reachable only from
// this host.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func (m *Master) closeStore() error {
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	if m.storeClosed {
		return nil
	}
	m.storeClosed = true
	if err := m.store.Close(); err != nil {
		return fmt.Errorf("flush and close stream log: %w", err)
	}
	return nil
}

// Streams lists the streams this master publishes.
func (m *Master) Streams() []string { return m.streams }

// Publish validates rows, appends them to stream as one token, waits until
// they are durable, then hands them to the protocol server for fan-out. It
// returns the token. Either every row is stored or none is.
func (m *Master) Publish(ctx context.Context, stream string, rows []json.RawMessage) (int64, error) {
	encoded := make([]json.RawMessage, len(rows))
	for i, row := range rows {
		// Rows go on the wire exactly as Python's json.dumps would write
		// them, so traces compare byte for byte with Synapse's.
		enc, err := replication.AppendPythonJSON(nil, row)
		if err != nil {
			return 0, &RowError{Index: i, Err: fmt.Errorf("not valid JSON; a row is a JSON array: %w", err)}
		}
		encoded[i] = enc
	}
	return m.publishEncoded(ctx, stream, encoded)
}

// publishEncoded is Publish for rows already in Python's json.dumps form
// (the HTTP handler encodes a whole request body in one pass).
func (m *Master) publishEncoded(ctx context.Context, stream string, rows []json.RawMessage) (int64, error) {
	seq, ok := m.seq[stream]
	if !ok {
		return 0, fmt.Errorf("stream %q: %w; this master publishes %v", stream, replication.ErrUnknownStream, m.streams)
	}
	if len(rows) == 0 {
		return 0, errors.New("no rows: send at least one row")
	}
	// The server skips a row that cannot go on the wire as one RDATA line;
	// refuse it here instead, before anything is stored. Rows in Python
	// form are never empty and hold no newline, so only the length can
	// fail; the largest token gives the longest prefix, so the check holds
	// whatever token the row gets.
	maxRow := m.cfg.Limits.MaxLineLength - len("RDATA  ") - len(stream) - len(strconv.FormatInt(math.MaxInt64, 10)) - 1
	for i, row := range rows {
		if err := m.validate(stream, row); err != nil {
			return 0, &RowError{Index: i, Err: err}
		}
		if len(row) > maxRow {
			return 0, &RowError{Index: i, Err: fmt.Errorf("row encodes to %d bytes; with its RDATA prefix it is over the line limit of %d bytes (limits.maxLineLength)", len(row), m.cfg.Limits.MaxLineLength)}
		}
	}
	return m.appendAndPublish(ctx, seq, stream, rows)
}

// appendAndPublish stores already-valid, wire-encoded rows and publishes them.
func (m *Master) appendAndPublish(ctx context.Context, seq *sequencer, stream string, rows []json.RawMessage) (int64, error) {
	m.storeMu.RLock()
	defer m.storeMu.RUnlock()
	if m.storeClosed {
		return 0, ErrShuttingDown
	}
	start := m.now()
	seq.begin()
	u, err := m.store.AppendEncoded(ctx, stream, rows)
	if err != nil {
		seq.failed(m.srv.Publish)
		m.metrics.publishErrors.WithLabelValues(stream).Inc()
		return 0, fmt.Errorf("append to stream %s: %w", stream, err)
	}
	seq.done(u, m.srv.Publish)
	m.metrics.publishedRows.WithLabelValues(stream).Add(float64(len(rows)))
	m.metrics.publishSeconds.Observe(m.now().Sub(start).Seconds())
	return u.Token, nil
}

// sequencer hands a stream's durable updates to the server in token order.
// Concurrent publishers to one stream are group-committed together by the
// log, and their Append calls can return in any order; the server must see
// tokens in order, so an update waits here until every earlier token has
// been handed over.
type sequencer struct {
	mu       sync.Mutex
	next     int64
	inflight int
	pending  map[int64]replication.Update
}

func (s *sequencer) begin() {
	s.mu.Lock()
	s.inflight++
	s.mu.Unlock()
}

// done records a durable update and publishes every update now in order.
// publish is called with the lock held so that two publishers cannot
// interleave their hand-overs; it only queues, so this is short.
func (s *sequencer) done(u replication.Update, publish func(replication.Update)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	s.pending[u.Token] = u
	s.drain(publish)
}

// failed records an Append that returned an error. Such an Append may or
// may not have consumed a token; once nothing is in flight, any token still
// missing can never arrive, so the queue skips over it.
func (s *sequencer) failed(publish func(replication.Update)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	s.drain(publish)
}

func (s *sequencer) drain(publish func(replication.Update)) {
	for {
		if u, ok := s.pending[s.next]; ok {
			delete(s.pending, s.next)
			s.next++
			publish(u)
			continue
		}
		if s.inflight > 0 || len(s.pending) == 0 {
			return
		}
		// Nothing in flight, yet a gap: skip to the smallest pending token.
		lowest := int64(-1)
		for t := range s.pending {
			if lowest < 0 || t < lowest {
				lowest = t
			}
		}
		s.next = lowest
	}
}
