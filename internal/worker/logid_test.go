package worker

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// identifiedSource is a master's source with a log identity.
type identifiedSource struct {
	*replication.MemorySource
	id string
}

func (s identifiedSource) LogID() string { return s.id }

// startIdentifiedMaster serves rows 1..n of "caches" from a log with the
// given id.
func startIdentifiedMaster(t *testing.T, id string, n int) string {
	t.Helper()
	src := identifiedSource{replication.NewMemorySource("caches"), id}
	for i := 1; i <= n; i++ {
		src.Append("caches", probetest.Row(i))
	}
	srv, err := replication.NewServer(replication.ServerConfig{ServerName: testServerName}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, replication.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// Issue 11 item 1: a worker saved token 5; the master's log was wiped and 8
// new rows were published; the worker resumed after token 5 of the new log
// and its rows 1-5 never arrived. Now the worker refuses to resume across
// two logs, and --resync replays the new log.
func TestWorkerRefusesToResumeAcrossALogReset(t *testing.T) {
	const oldID, newID = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	old := startIdentifiedMaster(t, oldID, 5)
	cfg := baseConfig(t, old)
	cfg.Streams = []string{"caches"}
	sink := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg.Sink, cfg.From = "file:"+sink, from(0)
	w, stop := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "rows 1-5 saved", func() bool { tok, _ := w.state.Position("caches"); return tok == 5 })
	stop()

	reset := startIdentifiedMaster(t, newID, 8) // the wiped log, 8 new rows
	cfg.Address, cfg.From = reset, nil
	w2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- w2.Run(context.Background()) }()
	select {
	case err := <-runErr:
		if !errors.Is(err, ErrLogChanged) || !strings.Contains(err.Error(), "--resync") || !strings.Contains(err.Error(), newID) {
			t.Fatalf("Run against a reset log: %v, want ErrLogChanged naming the new log and --resync", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker kept running against a reset log")
	}
	if got := fileLines(t, sink); len(got) != 5 {
		t.Fatalf("the sink has %d lines after the refusal, want the 5 of the old log", len(got))
	}

	cfg.Resync = true
	w3, stop3 := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the new log replayed", func() bool { return len(fileLines(t, sink)) == 13 })
	stop3()
	lines := fileLines(t, sink)
	checkSequence(t, lines[5:], 1, 8) // every row of the new log, once
	if got := w3.state.LogID(); got != newID {
		t.Fatalf("log id after the resync %q, want the new log's %q", got, newID)
	}
	data, err := os.ReadFile(filepath.Join(cfg.StateDir, stateFileName))
	if err != nil || !strings.Contains(string(data), newID) {
		t.Fatalf("positions file %s (%v) does not record the new log id", data, err)
	}
}

// A worker whose state predates log ids adopts the master's id; a master
// that announces none is resumed unchecked.
func TestWorkerAdoptsTheFirstLogID(t *testing.T) {
	const id = "00112233445566778899aabbccddeeff"
	addr := startIdentifiedMaster(t, id, 3)
	cfg := baseConfig(t, addr)
	cfg.Streams, cfg.Sink, cfg.From = []string{"caches"}, "stdout", from(0)
	cfg.Stdout = &syncBuffer{}
	w, stop := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "log id and rows recorded", func() bool {
		tok, _ := w.state.Position("caches")
		return w.state.LogID() == id && tok == 3
	})
	stop()

	plain := probetest.Start(t, testServerName) // no identity
	for i := 1; i <= 3; i++ {
		plain.Publish("caches", probetest.Row(i))
	}
	cfg.Address = plain.Addr()
	w2, stop2 := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "caught up", func() bool { return w2.Status().Ready })
	stop2()
}

// With ResyncOnLogChange the worker resyncs by itself instead of stopping:
// a pod restarted into the same error forever is worse than a replay.
func TestWorkerResyncsOnLogChangeWhenAsked(t *testing.T) {
	const oldID, newID = "11111111111111111111111111111111", "22222222222222222222222222222222"
	cfg := baseConfig(t, startIdentifiedMaster(t, oldID, 5))
	cfg.Streams = []string{"caches"}
	sink := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg.Sink, cfg.From = "file:"+sink, from(0)
	w, stop := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "rows 1-5 saved", func() bool { tok, _ := w.state.Position("caches"); return tok == 5 })
	stop()

	cfg.Address, cfg.From, cfg.ResyncOnLogChange = startIdentifiedMaster(t, newID, 8), nil, true
	w2, stop2 := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the new log replayed", func() bool { return len(fileLines(t, sink)) == 13 })
	waitFor(t, 10*time.Second, "the new log's position saved", func() bool {
		tok, _ := w2.state.Position("caches")
		return tok == 8 && w2.state.LogID() == newID
	})
	stop2()
	checkSequence(t, fileLines(t, sink)[5:], 1, 8)
}
