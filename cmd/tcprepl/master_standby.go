package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// runPostgresMaster runs a master on the PostgreSQL log as a loop of two
// roles on the same sockets: standby (waiting to take the log over,
// /readyz 503 with role "standby") and active (serving). When the active
// master loses the log (fenced: another master took it over while this
// one was frozen or cut off; or PostgreSQL failed a commit), it stops
// serving and becomes a standby again, without exiting: the process is
// healthy, and a restart would only lose time. It returns when ctx is done
// or on an error that waiting cannot cure (no DSN, a listener failing).
func runPostgresMaster(ctx context.Context, cfg masterapi.Config, logger logr.Logger, shutdownTimeout time.Duration) error {
	var lc net.ListenConfig
	replRaw, err := lc.Listen(ctx, "tcp", cfg.ReplicationListen)
	if err != nil {
		return fmt.Errorf("listen for replication on %s: %w", cfg.ReplicationListen, err)
	}
	httpRaw, err := lc.Listen(ctx, "tcp", cfg.HTTPListen)
	if err != nil {
		_ = replRaw.Close()
		return fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPListen, err)
	}
	// The sockets outlive each role, so the addresses stay the same (and
	// so that a Service never sees the ports close).
	repl, httpLn := newSharedListener(replRaw), newSharedListener(httpRaw)
	defer repl.close()
	defer httpLn.close()
	var plain *sharedListener
	if addr := cfg.TLS.PlaintextReplicationListen; addr != "" {
		raw, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("listen for plaintext replication on %s (tls.plaintextReplicationListen): %w", addr, err)
		}
		plain = newSharedListener(raw)
		defer plain.close()
	}
	replViews := func() []net.Listener {
		if plain == nil {
			return []net.Listener{repl.view()}
		}
		return []net.Listener{repl.view(), plain.view()}
	}
	logger.Info("master listening", "http", httpRaw.Addr().String(), "replication", replRaw.Addr().String(), "log", masterapi.LogPostgres)
	standbyRegistry := master.NewStandbyRegistry()
	for {
		logger.Info("master is a standby: waiting to take the PostgreSQL stream log over")
		l, err := master.WaitAsStandby(ctx, cfg, master.StandbyOptions{
			HTTP: httpLn.view(), Replication: replViews(), Registry: standbyRegistry, Logger: logger,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting: a clean exit
			}
			return err
		}
		cfg = latestConfig(ctx, cfg)
		m, err := master.New(cfg, master.Options{Logger: logger, Log: l})
		if err != nil {
			_ = l.Close()
			return err
		}
		logger.Info("master is active: took the PostgreSQL stream log over")
		ls := master.Listeners{Replication: repl.view(), HTTP: httpLn.view()}
		if plain != nil {
			ls.PlaintextReplication = plain.view()
		}
		stopWatching := watchConfig(ctx, m)
		err = serveUntil(ctx, m, ls, shutdownTimeout)
		stopWatching()
		if ctx.Err() != nil {
			return err
		}
		if !errors.Is(err, master.ErrLogFailed) {
			return err
		}
		logger.Error(err, "master lost the PostgreSQL stream log; it is a standby again")
	}
}

// serveUntil serves m until ctx is done (then shuts it down gracefully) or
// it stops on its own (its log failed, a listener failed).
func serveUntil(ctx context.Context, m *master.Master, ls master.Listeners, shutdownTimeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- m.ServeListeners(ls) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return errors.Join(m.Shutdown(sctx), <-done)
}

// sharedListener accepts on one socket for a succession of servers: each
// gets a view, and closing a view (as http.Server.Shutdown does) stops
// only that server's Accept, not the socket.
type sharedListener struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newSharedListener(ln net.Listener) *sharedListener {
	s := &sharedListener{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

func (s *sharedListener) acceptLoop() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.conns <- c
	}
}

// close closes the socket; a connection accepted but not yet taken is
// closed too.
func (s *sharedListener) close() {
	s.once.Do(func() {
		_ = s.ln.Close()
		for {
			select {
			case c := <-s.conns:
				_ = c.Close()
			case <-s.done:
				return
			}
		}
	})
}

func (s *sharedListener) view() net.Listener {
	return &listenerView{s: s, closed: make(chan struct{})}
}

type listenerView struct {
	s      *sharedListener
	closed chan struct{}
	once   sync.Once
}

func (v *listenerView) Accept() (net.Conn, error) {
	select {
	case c := <-v.s.conns:
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.s.done:
		return nil, net.ErrClosed
	}
}

func (v *listenerView) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *listenerView) Addr() net.Addr { return v.s.ln.Addr() }
