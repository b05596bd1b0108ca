package probe

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
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
// listed in its connection table with its lag: a worker held behind reports
// the master's tokens behind (and seconds behind), and none once it catches
// up.
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
	waitFor(t, 20*time.Second, "the oldest typing token", func() bool {
		for _, sp := range p.Snapshot().Streams {
			if sp.Name == "typing" {
				return sp.OldestToken > 0 && sp.OldestToken <= tok
			}
		}
		return false
	})
	t.Logf("real master: heartbeat p50=%v p99=%v max=%v over %d samples; %d streams", s.Heartbeat.P50, s.Heartbeat.P99, s.Heartbeat.Max, s.Heartbeat.Samples, len(s.Streams))

	// Lag: a worker catching up from token 0 into a sink that takes no
	// rows stops reading once the socket is full, so the master has sent
	// it only part of the stream. Enough rows that the socket's buffers
	// cannot hold them all.
	rows := make([]json.RawMessage, 1000) // the most one publish takes
	for i := range rows {
		rows[i] = json.RawMessage(`["!room:lag", ["@someone:example.org"]]`)
	}
	var head int64
	for range 200 {
		if head, err = m.Publish(ctx, "typing", rows); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	sink := &blockedWriter{release: release}
	runWorker(t, worker.Config{
		Address: replAddr, ServerName: testServerName, Name: "worker-behind", Streams: []string{"typing"}, From: new(int64),
		StateDir: t.TempDir(), Sink: "stdout", Stdout: sink, Logger: logr.Discard(),
	})
	defer releaseOnce.Do(func() { close(release) }) // before the worker stops (deferred later, runs first)
	var masterLag, probeLag ConnectionStream
	waitFor(t, 60*time.Second, "the probe to report the lag the master's table shows", func() bool {
		mc, ok := masterStream(m.ConnectionTable(), "worker-behind", "typing")
		if !ok {
			return false
		}
		pc, ok := probeStream(p.Snapshot(), "worker-behind", "typing")
		masterLag = ConnectionStream{Name: mc.Name, Token: mc.Token, TokensBehind: mc.TokensBehind, SecondsBehind: mc.SecondsBehind}
		probeLag = pc
		return ok && mc.TokensBehind > 0 && pc.TokensBehind == mc.TokensBehind && pc.Token == mc.Token
	})
	if probeLag.SecondsBehind <= 0 || probeLag.Token+probeLag.TokensBehind != head {
		t.Fatalf("probe reports %+v for the held worker (master %+v, head %d): want seconds behind too, and token + behind = head", probeLag, masterLag, head)
	}
	releaseOnce.Do(func() { close(release) })
	waitFor(t, 60*time.Second, "the probe to report the worker caught up", func() bool {
		pc, ok := probeStream(p.Snapshot(), "worker-behind", "typing")
		return ok && pc.Token == head && pc.TokensBehind == 0 && pc.SecondsBehind == 0
	})
}

// blockedWriter is a sink that takes nothing until release is closed.
type blockedWriter struct{ release chan struct{} }

func (b *blockedWriter) Write(p []byte) (int, error) {
	<-b.release
	return len(p), nil
}

// runWorker runs a worker until the test ends.
func runWorker(t *testing.T, cfg worker.Config) {
	t.Helper()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker %s: %v", cfg.Name, err)
		}
	})
}

func masterStream(table []masterapi.Connection, conn, stream string) (masterapi.ConnectionStream, bool) {
	for _, c := range table {
		if c.Name != conn {
			continue
		}
		for _, s := range c.Streams {
			if s.Name == stream {
				return s, true
			}
		}
	}
	return masterapi.ConnectionStream{}, false
}

func probeStream(s Snapshot, conn, stream string) (ConnectionStream, bool) {
	for _, c := range s.Connections {
		if c.Name != conn {
			continue
		}
		for _, st := range c.Streams {
			if st.Name == stream {
				return st, true
			}
		}
	}
	return ConnectionStream{}, false
}
