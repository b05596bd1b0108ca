package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// target is the master under test.
type target struct {
	cfg     Config
	addr    string
	httpURL string
	pid     int
	m       *master.Master // InProcess only
	// postmaster is the PostgreSQL server's pid when the log is
	// PostgreSQL on this machine (dbcpu.go).
	postmaster int
	shutdown   func() error
}

// start brings up (or locates) the master.
func start(ctx context.Context, cfg Config) (*target, error) {
	t := &target{cfg: cfg, shutdown: func() error { return nil }}
	dataDir := cfg.DataDir
	cleanup := func() {}
	var scratchDir, dsn string
	if cfg.Mode != External {
		d, err := os.MkdirTemp("", "tcprepl-bench")
		if err != nil {
			return nil, err
		}
		scratchDir, cleanup = d, func() { _ = os.RemoveAll(d) }
		if dataDir == "" {
			dataDir = filepath.Join(d, "log")
		}
		if cfg.Log == LogPostgres {
			var drop func()
			if dsn, drop, err = scratchDatabase(ctx, cfg.PostgresDSN); err != nil {
				cleanup()
				return nil, err
			}
			cleanup = func() { drop(); _ = os.RemoveAll(d) }
		}
	}
	mc, err := cfg.masterConfig(dataDir, dsn, scratchDir)
	if err != nil {
		cleanup()
		return nil, err
	}
	switch cfg.Mode {
	case External:
		if cfg.MasterAddr == "" || cfg.HTTPURL == "" {
			return nil, errors.New("an external master needs both its replication address (--master) and HTTP URL (--http)")
		}
		t.addr, t.httpURL, t.pid = cfg.MasterAddr, strings.TrimRight(cfg.HTTPURL, "/"), cfg.MasterPID
	case InProcess:
		m, err := newInProcessMaster(ctx, mc)
		if err != nil {
			cleanup()
			return nil, err
		}
		replLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cleanup()
			return nil, err
		}
		httpLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			_ = replLn.Close()
			cleanup()
			return nil, err
		}
		served := make(chan error, 1)
		go func() { served <- m.Serve(replLn, httpLn) }()
		t.m, t.addr, t.httpURL, t.pid = m, replLn.Addr().String(), "http://"+httpLn.Addr().String(), os.Getpid()
		t.shutdown = func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := errors.Join(m.Shutdown(sctx), <-served)
			cleanup()
			return err
		}
	case Spawn:
		bin := cfg.Binary
		if bin == "" {
			var err error
			if bin, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		args, err := spawnArgs(mc, scratchDir)
		if err != nil {
			cleanup()
			return nil, err
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			cleanup()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			cleanup()
			return nil, fmt.Errorf("start %s master: %w", bin, err)
		}
		addrs := make(chan [2]string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				var ev struct{ Msg, Replication, HTTP string }
				if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Msg == "master serving" {
					addrs <- [2]string{ev.Replication, ev.HTTP}
				}
			}
		}()
		select {
		case a := <-addrs:
			t.addr, t.httpURL = a[0], "http://"+a[1]
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			cleanup()
			return nil, errors.New("spawned master did not report its addresses within 30s")
		}
		t.pid = cmd.Process.Pid
		t.shutdown = func() error {
			_ = cmd.Process.Signal(os.Interrupt)
			err := cmd.Wait()
			cleanup()
			if err != nil {
				return fmt.Errorf("spawned master exited: %w", err)
			}
			return nil
		}
	default:
		return nil, fmt.Errorf("unknown mode %q: use in-process, spawn or external", cfg.Mode)
	}
	if dsn != "" {
		t.postmaster = postmasterOf(ctx, dsn)
	}
	return t, nil
}

// currentToken reads the stream's position from the HTTP API.
func (t *target) currentToken(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.httpURL+"/v1/streams", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct{ Streams []masterapi.StreamStatus }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("GET /v1/streams: %w", err)
	}
	for _, s := range out.Streams {
		if s.Name == Stream {
			return s.Token, nil
		}
	}
	return 0, fmt.Errorf("the master does not publish stream %s", Stream)
}
