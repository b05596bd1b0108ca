package probe

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/worker"
)

// realMaster runs tcprepl's own master (log, protocol server, HTTP API) on
// 127.0.0.1 and returns its replication address and HTTP URL.
func realMaster(t *testing.T) (replAddr, httpURL string, m *master.Master) {
	t.Helper()
	m, err := master.New(masterapi.Config{ServerName: testServerName, Ephemeral: true}.WithDefaults(), master.Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(replLn, httpLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("master shutdown: %v", err)
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("master Serve: %v", err)
		}
	})
	return replLn.Addr().String(), "http://" + httpLn.Addr().String(), m
}

// TestProbeAgainstRealMaster checks the whole path with tcprepl's master:
// heartbeats relayed through its log, positions, and a reference worker
// listed in its connection table with its lag.
func TestProbeAgainstRealMaster(t *testing.T) {
	replAddr, httpURL, m := realMaster(t)
	ctx := context.Background()
	if _, err := m.Publish(ctx, "typing", []json.RawMessage{json.RawMessage(`["!room:x", ["@a:x"]]`)}); err != nil {
		t.Fatal(err)
	}

	wcfg := worker.Config{
		Address: replAddr, ServerName: testServerName, Name: "worker-0", Streams: []string{"typing"},
		StateDir: t.TempDir(), Sink: "stdout", Stdout: io.Discard, Logger: logr.Discard(),
	}
	w, err := worker.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() {
		wcancel()
		if err := <-wdone; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	cfg := fastConfig(t, replAddr)
	cfg.HTTPURL = httpURL
	p := runProbe(t, cfg)
	waitFor(t, 20*time.Second, "heartbeats and the worker in the table", func() bool {
		s := p.Snapshot()
		return s.Reachable && s.Heartbeat.Samples >= 3 && len(s.Connections) == 1 && s.Connections[0].Name == "worker-0"
	})
	tok, err := m.Publish(ctx, "typing", []json.RawMessage{json.RawMessage(`["!room:x", []]`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the new typing token", func() bool { return position(p.Snapshot(), "typing") == tok })
	s := p.Snapshot()
	if s.Error != nil || !s.ConnectionsAvailable || s.Connections[0].Name != "worker-0" {
		t.Fatalf("snapshot = %+v", s)
	}
	if len(s.Streams) < 15 { // the standard streams but federation, which is off by default
		t.Fatalf("streams = %d, want the master's standard streams", len(s.Streams))
	}
	t.Logf("real master: heartbeat p50=%v p99=%v max=%v over %d samples; %d streams", s.Heartbeat.P50, s.Heartbeat.P99, s.Heartbeat.Max, s.Heartbeat.Samples, len(s.Streams))
}
