package master

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcprepl/tcprepl/internal/backoff"
	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// pgOpenTimeout bounds one attempt to connect, migrate and take the log
// over.
const pgOpenTimeout = 15 * time.Second

// WaitForPostgresLog opens the PostgreSQL stream log (log.backend
// postgres), retrying until it opens or ctx is done. A database that is
// down, a role that lacks a grant or another master holding the log are
// reasons to wait, not to exit: meanwhile it serves /healthz (200: the
// process is fine) and /readyz (503 with the latest reason and role
// "standby") on httpLn, so that Kubernetes neither routes to the master
// nor restarts it in a loop. It stops serving httpLn (and closes it) before
// it returns; the caller then builds the master with the log
// (Options.Log) and listens again.
func WaitForPostgresLog(ctx context.Context, cfg masterapi.Config, httpLn net.Listener, logger logr.Logger, now func() time.Time) (StreamLog, error) {
	return WaitAsStandby(ctx, cfg, StandbyOptions{HTTP: httpLn, Logger: logger, Now: now})
}

// StandbyOptions configure WaitAsStandby.
type StandbyOptions struct {
	// HTTP serves /healthz, /readyz and /metrics while waiting; every
	// other request gets 503 saying this master is a standby. Closed
	// before WaitAsStandby returns.
	HTTP net.Listener
	// Replication listeners answer each connection with an ERROR line and
	// close it, so that a worker retries (and reaches the active master
	// through the Service) instead of hanging. Closed before WaitAsStandby
	// returns.
	Replication []net.Listener
	// Registry, if not nil, is served on /metrics.
	Registry *prometheus.Registry
	Logger   logr.Logger
	Now      func() time.Time
}

// standbyReplicationError is what a standby answers a replication
// connection with.
const standbyReplicationError = "ERROR " + replication.StandbyMessage + "\n"

// WaitAsStandby is WaitForPostgresLog for a master that may run beside an
// active one: it keeps one session to PostgreSQL and polls every
// log.standbyPollInterval to take the log over, as soon as the active
// master's session ends or its lease expires (pglog.Candidate). Errors
// other than a live writer (the database unreachable, a missing grant)
// are retried with backoff on a new session.
func WaitAsStandby(ctx context.Context, cfg masterapi.Config, so StandbyOptions) (StreamLog, error) {
	dsn, err := cfg.PostgresDSN()
	if err != nil {
		_ = so.HTTP.Close()
		for _, ln := range so.Replication {
			_ = ln.Close()
		}
		return nil, err
	}
	var mu sync.Mutex
	reason := "connecting to PostgreSQL"
	getReason := func() string {
		mu.Lock()
		defer mu.Unlock()
		return reason
	}
	stop := serveStandby(so, getReason)
	defer stop()

	logger := so.Logger
	opts := pgOptions(cfg, dsn, logger, so.Now)
	_, _, poll := cfg.Log.LeaseTimes()
	wait := backoff.New(500*time.Millisecond, 10*time.Second)
	var cand *pglog.Candidate
	defer func() {
		if cand != nil {
			_ = cand.Close()
		}
	}()
	locked := false
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, pgOpenTimeout)
		err = nil
		if cand == nil {
			cand, err = pglog.NewCandidate(actx, opts)
		}
		var l *pglog.Log
		if err == nil {
			l, err = cand.TryTakeOver(actx)
		}
		cancel()
		if err == nil {
			cand = nil // the log owns its session
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for the PostgreSQL stream log: %w (last error: %w)", ctx.Err(), err)
		}
		var delay time.Duration
		if errors.Is(err, pglog.ErrLocked) {
			// Another master is active: poll, on the same session.
			delay = poll
			wait.Reset()
			if !locked {
				logger.Info("standby: another master holds the PostgreSQL stream log; polling to take over", "pollInterval", poll, "reason", err.Error())
			}
			locked = true
		} else {
			delay = wait.Next()
			if cand != nil {
				_ = cand.Close()
				cand = nil
			}
			locked = false
			logger.Error(err, "cannot open the PostgreSQL stream log; retrying", "attempt", attempt, "retryIn", delay)
		}
		mu.Lock()
		reason = fmt.Sprintf("%v (attempt %d, retrying in %s)", err, attempt, delay.Round(time.Millisecond))
		mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the PostgreSQL stream log: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// serveStandby serves the standby's HTTP API and refuses replication
// connections until the returned function is called, which closes both
// listeners and waits for the servers to stop.
func serveStandby(so StandbyOptions, reason func() string) (stop func()) {
	standby := func(w http.ResponseWriter, code int, msg string) {
		closeAfterReply(w)
		writeJSON(w, code, map[string]string{"error": msg, "role": RoleStandby})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "role": RoleStandby})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		standby(w, http.StatusServiceUnavailable, "waiting for the PostgreSQL stream log: "+reason())
	})
	if so.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(so.Registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		standby(w, http.StatusServiceUnavailable, "this master is a standby, nothing stored: retry against the active master (waiting for the PostgreSQL stream log: "+reason()+")")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(so.HTTP) })
	for _, ln := range so.Replication {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = io.WriteString(c, standbyReplicationError)
				_ = c.Close()
			}
		})
	}
	return func() {
		_ = srv.Close()
		for _, ln := range so.Replication {
			_ = ln.Close()
		}
		wg.Wait()
	}
}

// pgOptions maps the master's config onto the PostgreSQL log's options.
func pgOptions(cfg masterapi.Config, dsn string, logger logr.Logger, now func() time.Time) pglog.Options {
	ret := map[string]pglog.Retention{}
	for _, s := range cfg.Streams() {
		if r, ok := cfg.Retention[s]; ok {
			ret[s] = pglog.Retention{MaxRows: r.MaxRows, MaxAge: r.MaxAge.Duration, MaxBytes: r.MaxBytes}
		}
	}
	def := cfg.Retention["*"]
	ttl, renew, _ := cfg.Log.LeaseTimes()
	return pglog.Options{
		DSN:                dsn,
		ServerName:         cfg.ServerName,
		Streams:            cfg.Streams(),
		Retention:          ret,
		DefaultRetention:   pglog.Retention{MaxRows: def.MaxRows, MaxAge: def.MaxAge.Duration, MaxBytes: def.MaxBytes},
		TrimInterval:       cfg.RetentionInterval.Duration,
		MaxLineLength:      cfg.Limits.MaxLineLength,
		TailCacheBytes:     cfg.Storage.TailCacheBytes,
		Now:                now,
		Logger:             logger.WithName("pglog"),
		LeaseTTL:           ttl,
		LeaseRenewInterval: renew,
		CommitConnections:  cfg.Log.CommitConnectionsOrDefault(),
	}
}
