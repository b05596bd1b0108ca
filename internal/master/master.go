// Package master is the tcprepl master process: it owns the durable stream
// log, validates and publishes rows, fans them out over the replication
// protocol, gives client commands their effects, and serves the HTTP API
// (publish, positions, connection table, metrics, health).
package master

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
	"github.com/tcprepl/tcprepl/internal/masterapi"
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
	NewServer func(cfg masterapi.Config, src replication.Source, effects *Effects, reg prometheus.Registerer, logger logr.Logger) (ReplicationServer, error)
}

// Master is one running master: log, protocol server and HTTP API.
type Master struct {
	cfg masterapi.Config
	// current is cfg with the live settings of the last reload (reload.go).
	current      atomic.Pointer[masterapi.Config]
	reload       *reloadState
	logger       logr.Logger
	now          func() time.Time
	store        StreamLog
	validate     RowValidator
	srv          ReplicationServer
	registry     *prometheus.Registry
	metrics      *metrics
	effects      *Effects
	publishToken string
	readToken    string
	// certs serves the TLS certificate when tls is configured, else nil.
	certs   *certReloader
	streams []string
	known   map[string]bool // streams, for lookups
	httpSrv *http.Server

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
func New(cfg masterapi.Config, opts Options) (*Master, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid master config: %w", err)
	}
	token, err := cfg.PublishToken()
	if err != nil {
		return nil, err
	}
	readToken, err := cfg.ReadToken()
	if err != nil {
		return nil, err
	}
	var certs *certReloader
	if cfg.TLS.Enabled() {
		if certs, err = newCertReloader(cfg.TLS, opts.Logger.WithName("tls")); err != nil {
			return nil, err
		}
	}
	m := &Master{
		cfg:          cfg,
		readToken:    readToken,
		certs:        certs,
		logger:       opts.Logger,
		now:          opts.Now,
		registry:     opts.Registry,
		publishToken: token,
		streams:      cfg.Streams(),
		known:        map[string]bool{},
		validate:     opts.Validate,
	}
	m.current.Store(&cfg)
	for _, s := range m.streams {
		m.known[s] = true
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
		if _, err := m.store.CurrentToken(s); err != nil {
			return fail(fmt.Errorf("read position of stream %s: %w", s, err))
		}
	}
	m.metrics, err = newMetrics(m)
	if err != nil {
		return fail(err)
	}
	if m.reload, err = newReloadState(m.registry); err != nil {
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
	// The log decides durable order: it hands each update to the server
	// once durable, in token order, whatever order the appends return in.
	m.store.OnDurable(m.srv.Publish)
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

// Config returns the effective configuration (defaults applied), with the
// live settings of the last reload.
func (m *Master) Config() masterapi.Config { return *m.current.Load() }

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
	var plainLn net.Listener
	if addr := m.cfg.TLS.PlaintextReplicationListen; addr != "" {
		if plainLn, err = lc.Listen(ctx, "tcp", addr); err != nil {
			_ = replLn.Close()
			_ = httpLn.Close()
			_ = m.closeStore()
			return fmt.Errorf("listen for plaintext replication on %s (tls.plaintextReplicationListen): %w", addr, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- m.ServeListeners(Listeners{Replication: replLn, HTTP: httpLn, PlaintextReplication: plainLn})
	}()
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
	return m.ServeListeners(Listeners{Replication: replLn, HTTP: httpLn})
}

// Listeners are the sockets a master serves on. Replication and HTTP speak
// TLS when tls is configured (they are wrapped here); PlaintextReplication,
// if not nil, serves the replication protocol without TLS.
type Listeners struct {
	Replication          net.Listener
	HTTP                 net.Listener
	PlaintextReplication net.Listener
}

// ServeListeners is Serve with the optional plaintext replication listener.
func (m *Master) ServeListeners(l Listeners) error {
	replLn, httpLn := l.Replication, l.HTTP
	if m.certs != nil {
		replLn = tls.NewListener(replLn, m.certs.serverConfig(m.cfg.TLS, true))
		httpLn = tls.NewListener(httpLn, m.certs.serverConfig(m.cfg.TLS, false))
	}
	m.logger.Info("master serving", "serverName", m.cfg.ServerName,
		"replication", replLn.Addr().String(), "http", httpLn.Addr().String(),
		"tls", m.certs != nil, "clientAuth", m.cfg.TLS.ClientAuthRequired(),
		"dataDir", m.cfg.DataDir, "ephemeral", m.cfg.Ephemeral, "streams", len(m.streams))
	if l.PlaintextReplication != nil {
		m.logger.Info("also serving replication without TLS: its clients are unauthenticated (tls.plaintextReplicationListen)",
			"plaintextReplication", l.PlaintextReplication.Addr().String())
	}
	if m.publishToken == "" && !isLoopback(httpLn.Addr()) {
		m.logger.Info("WARNING: publishing needs no token and the HTTP API listens beyond loopback: anyone who reaches it can publish rows; set publishTokenFile or "+masterapi.PublishTokenEnv,
			"http", httpLn.Addr().String())
	}
	m.serving.Store(true)
	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		m.watchLog(stopWatch)
	}()
	errc := make(chan error, 3)
	serveRepl := func(ln net.Listener) {
		err := m.srv.Serve(ln)
		if errors.Is(err, errServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("replication server: %w", err)
		}
		errc <- err
	}
	go serveRepl(replLn)
	if l.PlaintextReplication != nil {
		go serveRepl(l.PlaintextReplication)
	}
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
	if l.PlaintextReplication != nil {
		second = errors.Join(second, <-errc)
	}
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

// ErrTooManyRows is wrapped by Publish for a batch over the row limit.
var ErrTooManyRows = errors.New("too many rows in one publish")

// rowsPerPublish is the row limit of a master with these limits.
func rowsPerPublish(l masterapi.Limits) int {
	return max(1, min(masterapi.MaxRowsPerPublish, l.MaxPendingCommands/10))
}

// MaxRows is the most rows one Publish may carry.
func (m *Master) MaxRows() int { return rowsPerPublish(m.current.Load().Limits) }

// tooManyRows is the error for a publish of n rows (at least n, when
// counting stopped at the limit).
func (m *Master) tooManyRows(n int) error {
	limits := m.current.Load().Limits
	return fmt.Errorf("%w: %d rows or more, the limit is %d rows per publish, which keeps a batch well below a connection's queue limit of %d (limits.maxPendingCommands); split them over several publishes", ErrTooManyRows, n, rowsPerPublish(limits), limits.MaxPendingCommands)
}

// Publish validates rows, appends them to stream as one token and returns
// that token once they are durable; the log then hands them to the protocol
// server for fan-out, in token order. Either every row is stored or none is.
func (m *Master) Publish(ctx context.Context, stream string, rows []json.RawMessage) (int64, error) {
	if err := m.checkBatch(stream, len(rows)); err != nil {
		return 0, err
	}
	encoded := make([]json.RawMessage, len(rows))
	var fieldBuf [16][]byte
	for i, row := range rows {
		// Rows go on the wire exactly as Python's json.dumps would write
		// them, so traces compare byte for byte with Synapse's; encoding
		// also validates them.
		enc, err := replication.AppendPythonJSON(nil, row)
		if err != nil {
			return 0, &RowError{Index: i, Err: fmt.Errorf("not valid JSON; a row is a JSON array: %w", err)}
		}
		fields, _ := jsonscan.AppendElements(enc, fieldBuf[:0])
		if err := m.checkRow(stream, i, enc, fields); err != nil {
			return 0, err
		}
		encoded[i] = enc
	}
	return m.appendRows(ctx, stream, encoded)
}

// checkBatch refuses a publish to an unknown stream, or of no rows or too
// many.
func (m *Master) checkBatch(stream string, rows int) error {
	switch {
	case !m.known[stream]:
		return fmt.Errorf("stream %q: %w; this master publishes %v", stream, replication.ErrUnknownStream, m.streams)
	case rows == 0:
		return errors.New("no rows: send at least one row")
	case rows > m.MaxRows():
		return m.tooManyRows(rows)
	}
	return nil
}

// checkRow checks row i of a publish, in wire form (valid JSON, as the
// Python-form encoder wrote it) and split into its fields, against its
// stream's shape. Whether it fits one RDATA line is the log's check
// (replication.CheckRDATARow, in AppendEncoded), made before anything of
// the batch is stored.
func (m *Master) checkRow(stream string, i int, row json.RawMessage, fields [][]byte) error {
	if err := m.validate(stream, row, fields); err != nil {
		return &RowError{Index: i, Err: err}
	}
	return nil
}

// appendRows stores rows already checked and in wire form as one token.
func (m *Master) appendRows(ctx context.Context, stream string, rows []json.RawMessage) (int64, error) {
	m.storeMu.RLock()
	defer m.storeMu.RUnlock()
	if m.storeClosed {
		return 0, ErrShuttingDown
	}
	start := m.now()
	u, err := m.store.AppendEncoded(ctx, stream, rows)
	if errors.Is(err, replication.ErrRowTooLong) {
		return 0, err // refused before anything was stored: the row's fault
	}
	if err != nil {
		m.metrics.publishErrors.WithLabelValues(stream).Inc()
		return 0, err // the log's error names the stream
	}
	m.metrics.publishedRows.WithLabelValues(stream).Add(float64(len(rows)))
	m.metrics.publishSeconds.Observe(m.now().Sub(start).Seconds())
	return u.Token, nil
}
