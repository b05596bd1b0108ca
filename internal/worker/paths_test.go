package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// scriptedMaster is a replication master that answers every REPLICATE with
// a fixed sequence of commands, whatever token the client asked from: it
// stands for a master that sends batches the worker already has.
type scriptedMaster struct {
	ln     net.Listener
	script []replication.Command
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startScriptedMaster(t *testing.T, script ...replication.Command) *scriptedMaster {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &scriptedMaster{ln: ln, script: script, conns: map[net.Conn]struct{}{}}
	m.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.mu.Lock()
			m.conns[c] = struct{}{}
			m.mu.Unlock()
			m.wg.Go(func() { m.serve(t, c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		m.mu.Lock()
		for c := range m.conns {
			_ = c.Close()
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
	return m
}

func (m *scriptedMaster) Addr() string { return m.ln.Addr().String() }

func (m *scriptedMaster) serve(t *testing.T, c net.Conn) {
	write := func(cmd replication.Command) bool {
		line, err := replication.FormatCommand(cmd)
		if err != nil {
			t.Errorf("format %v: %v", cmd, err)
			return false
		}
		_, err = c.Write(append(line, '\n'))
		return err == nil
	}
	if !write(replication.ServerCommand{ServerName: testServerName}) {
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		cmd, err := replication.ParseCommand(sc.Bytes())
		if err != nil {
			continue
		}
		if _, ok := cmd.(replication.ReplicateCommand); !ok {
			continue
		}
		for _, cmd := range m.script {
			if !write(cmd) {
				return
			}
		}
	}
}

func rdata(stream string, token int64, n int) replication.Command {
	return replication.RdataCommand{Stream: stream, Token: token, Row: probetest.Row(n)}
}

// metricValue reads a counter or gauge (the sum of its series) from g by
// its exported name; it fails the test when there is no such metric.
func metricValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestWorkerSkipsBatchesTheSinkHas: a batch whose token the sink already
// holds, sent again in the same connection or after a restart of the
// worker, is counted in tcprepl_worker_duplicate_batches_skipped_total and
// never reaches the sink a second time.
func TestWorkerSkipsBatchesTheSinkHas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	stateDir := t.TempDir()
	run := func(t *testing.T, script []replication.Command, wantPos int64) float64 {
		t.Helper()
		m := startScriptedMaster(t, script...)
		cfg := baseConfig(t, m.Addr())
		cfg.StateDir = stateDir
		cfg.Streams = []string{"events"}
		cfg.Sink = "file:" + path
		cfg.From = from(0)
		reg := prometheus.NewRegistry()
		cfg.Registerer = reg
		w, stop := startWorker(t, cfg)
		waitFor(t, 10*time.Second, "caught up", func() bool { return w.Status().Ready })
		if pos := w.Status().Positions["events"]; pos != wantPos {
			t.Fatalf("position %d, want %d", pos, wantPos)
		}
		dups := metricValue(t, reg, "tcprepl_worker_duplicate_batches_skipped_total")
		stop()
		return dups
	}

	// Tokens 1 and 2, then both again and 3, in one connection.
	dups := run(t, []replication.Command{
		rdata("events", 1, 1),
		rdata("events", 2, 2),
		rdata("events", 1, 1),
		rdata("events", 2, 2),
		rdata("events", 3, 3),
		replication.PositionCommand{Stream: "events", Token: 3},
	}, 3)
	if dups != 2 {
		t.Fatalf("duplicate_batches_skipped_total = %v after a repeat of 2 batches, want 2", dups)
	}
	checkSequence(t, readLines(t, path), 1, 3)

	// A new worker on the same state dir and file: the master replays from
	// token 1 although the worker asked from 3.
	dups = run(t, []replication.Command{
		rdata("events", 1, 1),
		rdata("events", 2, 2),
		rdata("events", 3, 3),
		rdata("events", 4, 4),
		replication.PositionCommand{Stream: "events", Token: 4},
	}, 4)
	if dups != 3 {
		t.Fatalf("duplicate_batches_skipped_total = %v after a replay of 3 saved batches, want 3", dups)
	}
	checkSequence(t, readLines(t, path), 1, 4)
}

// fullDisk is a writer that fails with ENOSPC while full is set and
// otherwise appends to what it holds.
type fullDisk struct {
	full   atomic.Bool
	failed atomic.Int64
	mu     sync.Mutex
	data   []byte
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if d.full.Load() {
		d.failed.Add(1)
		return 0, &os.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.ENOSPC}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.data = append(d.data, p...)
	return len(p), nil
}

func (d *fullDisk) lines(t *testing.T) []Line {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Line
	for _, l := range strings.Split(strings.TrimSuffix(string(d.data), "\n"), "\n") {
		if l == "" {
			continue
		}
		var line Line
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("sink line %q: %v", l, err)
		}
		out = append(out, line)
	}
	return out
}

// TestWorkerSinkOnAFullDisk: a sink that refuses a batch (its disk is full)
// is reported by Status, /readyz and tcprepl_worker_sink_errors_total, its
// position does not move past the refused batch, and once the disk has room
// again every row arrives, in order, once.
func TestWorkerSinkOnAFullDisk(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	disk := &fullDisk{}
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "stdout"
	cfg.Stdout = disk
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	w, _ := startWorker(t, cfg)
	web := httptest.NewServer(w.HTTPHandler(reg))
	defer web.Close()
	waitFor(t, 10*time.Second, "ready", func() bool { return w.Status().Ready })

	next, tok := publishSeq(m, "events", 0, 3)
	waitFor(t, 10*time.Second, "the first rows", func() bool { return w.Status().Positions["events"] == tok })
	disk.full.Store(true)
	next, _ = publishSeq(m, "events", next, 4)
	waitFor(t, 10*time.Second, "the sink error", func() bool { return errors.Is(w.Status().SinkError, syscall.ENOSPC) })
	if err := w.Status().SinkError; !errors.Is(err, ErrSinkUnavailable) {
		t.Fatalf("SinkError = %v, want ErrSinkUnavailable wrapping ENOSPC", err)
	}
	if body := get(t, web.URL+"/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "sink failing") || !strings.Contains(body, "no space left on device") {
		t.Fatalf("/readyz says %q, want the sink's full disk", body)
	}
	// The refused batch is retried (the worker reconnects to get it again).
	waitFor(t, 10*time.Second, "a retry", func() bool { return disk.failed.Load() >= 2 })
	if errs := metricValue(t, reg, "tcprepl_worker_sink_errors_total"); errs < 2 {
		t.Fatalf("sink_errors_total = %v after %d refused writes, want at least 2", errs, disk.failed.Load())
	}
	if pos := w.Status().Positions["events"]; pos != tok {
		t.Fatalf("position moved to %d past the refused batch (last accepted %d)", pos, tok)
	}

	disk.full.Store(false)
	next, last := publishSeq(m, "events", next, 2)
	waitFor(t, 10*time.Second, "every row after the disk has room", func() bool {
		st := w.Status()
		return st.Ready && st.Positions["events"] == last
	})
	checkSequence(t, disk.lines(t), 0, next)
	get(t, web.URL+"/readyz", http.StatusOK)
}

// TestWorkerSavesPositionsOnStop: Run saves what was delivered since the
// last save when it stops, and says so when it cannot.
func TestWorkerSavesPositionsOnStop(t *testing.T) {
	tests := map[string]struct {
		breakState bool
		wantErr    string
	}{
		"saved":            {},
		"state dir broken": {breakState: true, wantErr: "saving positions on stop"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := probetest.Start(t, testServerName, "events")
			cfg := baseConfig(t, m.Addr())
			cfg.Streams = []string{"events"}
			cfg.Sink = "stdout"
			cfg.Stdout = io.Discard
			cfg.From = from(0)
			// Saves happen on POSITION and then not for an hour: the
			// batches published once caught up are saved only on stop.
			cfg.SaveInterval = time.Hour
			w, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			waitFor(t, 10*time.Second, "caught up, position 0 saved", func() bool {
				st := w.Status()
				pos, saved := st.Positions["events"]
				return st.Ready && saved && pos == 0
			})
			if tc.breakState {
				if err := os.RemoveAll(cfg.StateDir); err != nil {
					t.Fatal(err)
				}
			}
			_, last := publishSeq(m, "events", 0, 3)
			waitFor(t, 10*time.Second, "the rows delivered", func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.delivered["events"] == last
			})
			if pos := w.Status().Positions["events"]; pos != 0 {
				t.Fatalf("position %d saved before the stop; the test needs the stop to save it", pos)
			}
			cancel()
			err = <-done
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Run = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			st, err := OpenState(cfg.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			defer closeT(t, st)
			if pos, _ := st.Position("events"); pos != last {
				t.Fatalf("saved position %d after stop, want %d", pos, last)
			}
		})
	}
}
