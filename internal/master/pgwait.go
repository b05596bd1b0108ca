package master

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/backoff"
	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// pgOpenTimeout bounds one attempt to connect, migrate and take the log
// over.
const pgOpenTimeout = 15 * time.Second

// WaitForPostgresLog opens the PostgreSQL stream log (log.backend
// postgres), retrying with backoff until it opens or ctx is done. A
// database that is down, a role that lacks a grant or another master
// holding the log are reasons to wait, not to exit: meanwhile it serves
// /healthz (200: the process is fine) and /readyz (503 with the latest
// reason) on httpLn, so that Kubernetes neither routes to the master nor
// restarts it in a loop. It stops serving httpLn (and closes it) before it
// returns; the caller then builds the master with the log (Options.Log)
// and listens again.
func WaitForPostgresLog(ctx context.Context, cfg masterapi.Config, httpLn net.Listener, logger logr.Logger, now func() time.Time) (StreamLog, error) {
	dsn, err := cfg.PostgresDSN()
	if err != nil {
		_ = httpLn.Close()
		return nil, err
	}
	var mu sync.Mutex
	reason := "connecting to PostgreSQL"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "waiting for the PostgreSQL stream log: "+reason)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(httpLn)
	}()
	defer func() {
		_ = srv.Close()
		<-served
	}()

	opts := pgOptions(cfg, dsn, logger, now)
	wait := backoff.New(500*time.Millisecond, 10*time.Second)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, pgOpenTimeout)
		l, err := pglog.Open(actx, opts)
		cancel()
		if err == nil {
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for the PostgreSQL stream log: %w (last error: %w)", ctx.Err(), err)
		}
		delay := wait.Next()
		mu.Lock()
		reason = fmt.Sprintf("%v (attempt %d, retrying in %s)", err, attempt, delay.Round(time.Millisecond))
		mu.Unlock()
		if errors.Is(err, pglog.ErrLocked) {
			logger.Info("another master holds the PostgreSQL stream log; waiting", "attempt", attempt, "retryIn", delay)
		} else {
			logger.Error(err, "cannot open the PostgreSQL stream log; retrying", "attempt", attempt, "retryIn", delay)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the PostgreSQL stream log: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
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
	return pglog.Options{
		DSN:              dsn,
		ServerName:       cfg.ServerName,
		Streams:          cfg.Streams(),
		Retention:        ret,
		DefaultRetention: pglog.Retention{MaxRows: def.MaxRows, MaxAge: def.MaxAge.Duration, MaxBytes: def.MaxBytes},
		TrimInterval:     cfg.RetentionInterval.Duration,
		MaxLineLength:    cfg.Limits.MaxLineLength,
		TailCacheBytes:   cfg.Storage.TailCacheBytes,
		Now:              now,
		Logger:           logger.WithName("pglog"),
	}
}
