package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
	"github.com/tcprepl/tcprepl/internal/workerapi"
)

const testServerName = "test.example.org"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

func baseConfig(t *testing.T, addr string) Config {
	return Config{
		Address:        addr,
		ServerName:     testServerName,
		Name:           "worker-test",
		StateDir:       t.TempDir(),
		Logger:         testr.New(t),
		InitialBackoff: 5 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		HTTPSink:       HTTPSinkConfig{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
	}
}

func from(n int64) *int64 { return &n }

// startWorker runs a worker until the test ends (or the returned stop is
// called), failing the test if Run returns an error.
func startWorker(t *testing.T, cfg Config) (*Worker, func()) {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// publishSeq publishes batches on stream whose rows carry the numbers
// next, next+1, ...; batch sizes cycle through 1, 2, 3. It returns the next
// number and the last token.
func publishSeq(m *probetest.Master, stream string, next, batches int) (int, int64) {
	var tok int64
	for b := range batches {
		size := b%3 + 1
		rows := make([]json.RawMessage, size)
		for i := range rows {
			rows[i] = probetest.Row(next)
			next++
		}
		tok = m.Publish(stream, rows...)
	}
	return next, tok
}

// rowNumber is the number a probetest.Row carries.
func rowNumber(t *testing.T, row json.RawMessage) int {
	t.Helper()
	var fields []json.RawMessage
	if err := json.Unmarshal(row, &fields); err != nil || len(fields) == 0 {
		t.Fatalf("row %s: %v", row, err)
	}
	n, err := strconv.Atoi(string(fields[0]))
	if err != nil {
		t.Fatalf("row %s: %v", row, err)
	}
	return n
}

// checkSequence checks that lines hold rows first..first+n-1 once each, in
// order, with tokens that grow and whole batches.
func checkSequence(t *testing.T, lines []Line, first, n int) {
	t.Helper()
	if len(lines) != n {
		t.Fatalf("got %d lines, want %d", len(lines), n)
	}
	var lastTok int64 = -1
	for i, l := range lines {
		if got := rowNumber(t, l.Row); got != first+i {
			t.Fatalf("line %d holds row %d, want %d (a row lost or repeated)", i, got, first+i)
		}
		if l.Index == 0 {
			if l.Token <= lastTok {
				t.Fatalf("line %d: token %d after %d", i, l.Token, lastTok)
			}
			lastTok = l.Token
		} else if l.Token != lastTok {
			t.Fatalf("line %d: batch split (token %d inside batch %d)", i, l.Token, lastTok)
		}
	}
}

func fileLines(t *testing.T, path string) []Line {
	t.Helper()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return readLines(t, path)
}

func TestWorkerFileSinkFromZeroAndResume(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	next, _ := publishSeq(m, "events", 0, 10)

	path := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "file:" + path
	cfg.From = from(0)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	w, stop := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the backlog in the file", func() bool { return len(fileLines(t, path)) == next })
	next, tok := publishSeq(m, "events", next, 5)
	waitFor(t, 10*time.Second, "live rows in the file", func() bool { return len(fileLines(t, path)) == next })
	checkSequence(t, readLines(t, path), 0, next)
	waitFor(t, 10*time.Second, "the position saved", func() bool { return w.Status().Positions["events"] == tok })

	// Metrics and readiness.
	web := httptest.NewServer(w.HTTPHandler(reg))
	defer web.Close()
	waitFor(t, 10*time.Second, "ready", func() bool { return w.Status().Ready })
	// The gauge is set just after the position is saved: poll for it.
	posLine := `tcprepl_worker_position{stream="events"} ` + strconv.FormatInt(tok, 10)
	waitFor(t, 10*time.Second, "the position gauge", func() bool {
		return strings.Contains(get(t, web.URL+"/metrics", http.StatusOK), posLine)
	})
	body := get(t, web.URL+"/metrics", http.StatusOK)
	for _, want := range []string{
		`tcprepl_worker_rows_received_total{stream="events"} ` + strconv.Itoa(next),
		`tcprepl_worker_caught_up 1`,
		`synapse_replication_tcp_protocol_inbound_rdata_count`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	get(t, web.URL+"/readyz", http.StatusOK)
	get(t, web.URL+"/healthz", http.StatusOK)
	if st := statusOf(t, web.URL); !st.Ready || st.Reason != "" || st.Positions["events"] != tok {
		t.Errorf("/v1/status = %+v, want ready at events %d", st, tok)
	}
	stop()

	// Rows published while the worker is down arrive after a restart,
	// once: it resumes from its saved position.
	next2, _ := publishSeq(m, "events", next, 4)
	cfg.From = nil
	cfg.Registerer = nil
	startWorker(t, cfg)
	waitFor(t, 10*time.Second, "rows published while down", func() bool { return len(fileLines(t, path)) == next2 })
	checkSequence(t, readLines(t, path), 0, next2)
}

func get(t *testing.T, url string, wantStatus int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s = %d %s, want %d", url, resp.StatusCode, b, wantStatus)
	}
	return string(b)
}

func TestWorkerFirstStartIsNow(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	next, _ := publishSeq(m, "events", 0, 3) // before the worker: not wanted
	var out syncBuffer
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "stdout"
	cfg.Stdout = &out
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "caught up", func() bool { return w.Status().Ready })
	end, _ := publishSeq(m, "events", next, 2)
	waitFor(t, 10*time.Second, "live rows on stdout", func() bool { return strings.Count(out.String(), "\n") == end-next })
	var lines []Line
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var line Line
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	checkSequence(t, lines, next, end-next)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWorkerMasterRestart(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "file:" + path
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "caught up", func() bool { return w.Status().Ready })
	next, _ := publishSeq(m, "events", 0, 5)
	waitFor(t, 10*time.Second, "rows", func() bool { return len(fileLines(t, path)) == next })
	m.Stop()
	waitFor(t, 10*time.Second, "the connection error", func() bool {
		return errors.Is(w.Status().ConnectionError, ErrMasterUnreachable) && !w.Status().Ready
	})
	next, _ = publishSeq(m, "events", next, 5) // while the master is down
	m.Restart()
	next, _ = publishSeq(m, "events", next, 5)
	waitFor(t, 10*time.Second, "every row after the restart", func() bool { return len(fileLines(t, path)) == next })
	checkSequence(t, readLines(t, path), 0, next)
	waitFor(t, 10*time.Second, "ready again", func() bool { st := w.Status(); return st.Ready && st.ConnectionError == nil })
}

func TestWorkerConnectionCut(t *testing.T) {
	m := probetest.Start(t, testServerName, "events", "typing")
	proxy := probetest.StartProxy(t, m.Addr())
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg := baseConfig(t, proxy.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "file:" + path
	cfg.From = from(0)
	w, _ := startWorker(t, cfg)
	next := 0
	for range 5 {
		waitFor(t, 10*time.Second, "caught up", func() bool { return w.Status().Ready })
		next, _ = publishSeq(m, "events", next, 20)
		proxy.Sever()
	}
	waitFor(t, 10*time.Second, "every row", func() bool { return len(fileLines(t, path)) == next })
	checkSequence(t, readLines(t, path), 0, next)
}

func TestWorkerHTTPSinkDownThenUp(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	var up atomic.Bool
	var mu sync.Mutex
	var got []HTTPBody
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(rw, "maintenance", http.StatusServiceUnavailable)
			return
		}
		var b HTTPBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
	}))
	defer hook.Close()

	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "http:" + hook.URL
	cfg.From = from(0)
	w, _ := startWorker(t, cfg)
	next, _ := publishSeq(m, "events", 0, 10)
	waitFor(t, 10*time.Second, "the sink error", func() bool { return errors.Is(w.Status().SinkError, ErrSinkUnavailable) })
	if st := w.Status(); st.Ready || st.Positions["events"] != 0 {
		t.Fatalf("while the sink is down: %+v", st)
	}
	web := httptest.NewServer(w.HTTPHandler(prometheus.NewRegistry()))
	defer web.Close()
	if body := get(t, web.URL+"/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "sink unavailable") {
		t.Fatalf("/readyz says %q", body)
	}
	if st := statusOf(t, web.URL); st.Ready || !strings.Contains(st.Reason, "sink unavailable") || st.Positions["events"] != 0 {
		t.Fatalf("/v1/status while the sink is down = %+v", st)
	}
	up.Store(true)
	var lines []Line
	waitFor(t, 10*time.Second, "every row at the endpoint", func() bool {
		mu.Lock()
		defer mu.Unlock()
		lines = lines[:0]
		for _, b := range got {
			for i, r := range b.Rows {
				lines = append(lines, Line{Stream: b.Stream, Token: b.Token, Index: i, Count: len(b.Rows), Row: r})
			}
		}
		return len(lines) >= next
	})
	checkSequence(t, lines, 0, next)
	waitFor(t, 10*time.Second, "ready", func() bool { st := w.Status(); return st.Ready && st.SinkError == nil })
}

func TestWorkerWrongServerName(t *testing.T) {
	m := probetest.Start(t, "other.example.org", "events")
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "stdout"
	cfg.Stdout = io.Discard
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the wrong-name error", func() bool { return errors.Is(w.Status().ConnectionError, ErrWrongServerName) })
	if msg := w.Status().ConnectionError.Error(); !strings.Contains(msg, "other.example.org") || !strings.Contains(msg, "--server-name") {
		t.Fatalf("error %q should name the server and the flag", msg)
	}
}

func TestWorkerUnreachable(t *testing.T) {
	cfg := baseConfig(t, refusedAddr(t))
	cfg.Streams = []string{"events"}
	cfg.Sink = "stdout"
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the unreachable error", func() bool { return errors.Is(w.Status().ConnectionError, ErrMasterUnreachable) })
	if w.Status().Ready {
		t.Fatal("ready while the master is unreachable")
	}
}

func TestWorkerTokenTooOld(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	_, tok := publishSeq(m, "events", 0, 5)
	m.Src.Trim("events", tok-1)
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "stdout"
	cfg.Stdout = io.Discard
	cfg.From = from(0)
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the refusal", func() bool { return errors.Is(w.Status().ConnectionError, ErrMasterRefused) })
	if msg := w.Status().ConnectionError.Error(); !strings.Contains(msg, "oldest token") {
		t.Fatalf("error %q should say the oldest token held", msg)
	}
}

func TestWorkerAllStreams(t *testing.T) {
	m := probetest.Start(t, testServerName, "events", "typing")
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{AllStreams}
	cfg.Sink = "file:" + path
	w, stop := startWorker(t, cfg)
	// ALL NOW gives one POSITION per stream the master publishes.
	waitFor(t, 10*time.Second, "positions of caches, events and typing", func() bool {
		st := w.Status()
		return st.Ready && len(st.Positions) == 3
	})
	m.Publish("events", probetest.Row(0))
	m.Publish("typing", probetest.Row(1))
	waitFor(t, 10*time.Second, "rows of both streams", func() bool { return len(fileLines(t, path)) == 2 })
	stop()
	m.Publish("typing", probetest.Row(2)) // while down
	startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the row published while down", func() bool { return len(fileLines(t, path)) == 3 })
	lines := readLines(t, path)
	if lines[2].Stream != "typing" || rowNumber(t, lines[2].Row) != 2 {
		t.Fatalf("lines = %+v", lines)
	}
}

func TestNewValidates(t *testing.T) {
	ok := Config{Address: "master:9092", ServerName: "x", Streams: []string{"events"}, Sink: "stdout"}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no address", func(c *Config) { c.Address = "" }, "TCPREPL_MASTER_ADDRESS"},
		{"bad address", func(c *Config) { c.Address = "master" }, "host:port"},
		{"no server name", func(c *Config) { c.ServerName = "" }, "TCPREPL_SERVER_NAME"},
		{"no streams", func(c *Config) { c.Streams = nil }, "--streams"},
		{"ALL and more", func(c *Config) { c.Streams = []string{"ALL", "events"} }, "cannot be combined"},
		{"ALL with --from", func(c *Config) { c.Streams = []string{"ALL"}; c.From = from(0) }, "only from NOW"},
		{"negative --from", func(c *Config) { c.From = from(-1) }, "not negative"},
		{"bad sink", func(c *Config) { c.Sink = "kafka:x" }, "stdout, file:PATH or http:URL"},
		{"bad stream name", func(c *Config) { c.Streams = []string{"has space"} }, "invalid stream name"},
		{"no state dir", func(c *Config) {}, "--state-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			if tt.name != "no state dir" {
				cfg.StateDir = t.TempDir()
			}
			tt.modify(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	// A failed New releases the state dir and leaves the registry clean.
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	bad := ok
	bad.StateDir, bad.Registerer, bad.Sink = dir, reg, "file:"+filepath.Join(t.TempDir(), "missing", "f")
	if _, err := New(bad); !errors.Is(err, ErrSinkFile) {
		t.Fatalf("err = %v, want ErrSinkFile", err)
	}
	good := ok
	good.StateDir, good.Registerer = dir, reg
	w, err := New(good)
	if err != nil {
		t.Fatalf("New after a failed New: %v", err)
	}
	w.close()
}

// The crash test runs the worker in a child process (this test binary run
// again with childEnv set), kills it with SIGKILL while it delivers, and
// restarts it, several times. The file must end up with every row once, in
// order.
const childEnv = "TCPREPL_WORKER_TEST_CHILD"

func runChild() int {
	cfg := Config{
		Address:    os.Getenv("CHILD_MASTER"),
		ServerName: testServerName,
		Name:       "crash-child",
		Streams:    []string{"events", "typing"},
		StateDir:   os.Getenv("CHILD_STATE"),
		Sink:       os.Getenv("CHILD_SINK"),
		From:       from(0),
	}
	w, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

func TestWorkerKilledMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	// Two streams, so that recovery has to find each stream's position in
	// the file, not just the last batch's.
	m := probetest.Start(t, testServerName, "events", "typing")
	dir := t.TempDir()
	path := filepath.Join(dir, "rows.jsonl")
	state := filepath.Join(dir, "state")
	start := func() (*childProc, error) {
		return startChild(t, m.Addr(), state, "file:"+path)
	}
	published := map[string][]int{}
	next := 0
	publish := func(batches int) {
		for b := range batches {
			stream := []string{"events", "typing"}[b%2]
			size := b%3 + 1
			rs := make([]json.RawMessage, size)
			for i := range rs {
				rs[i] = probetest.Row(next)
				published[stream] = append(published[stream], next)
				next++
			}
			m.Publish(stream, rs...)
		}
	}
	// live reports whether the child is subscribed to both streams: rows
	// published then reach it interleaved, as in production, rather than
	// as one catch-up page per stream.
	live := func() bool {
		for _, ci := range m.Connections() {
			if ci.Name != "crash-child" || len(ci.Subscriptions) != 2 {
				continue
			}
			if ci.Subscriptions[0].State == "subscribed" && ci.Subscriptions[1].State == "subscribed" {
				return true
			}
		}
		return false
	}
	kills := 0
	for round := range 6 {
		c, err := start()
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, fmt.Sprintf("round %d: the child subscribed", round), func() bool { return live() || c.exited() })
		before := countLines(path)
		publish(150)
		// Kill once the child is well into this round's backlog (about a
		// fifth of it): between two saves of its positions, writing.
		waitFor(t, 20*time.Second, fmt.Sprintf("round %d progress", round), func() bool {
			return countLines(path) > before+60 || c.exited()
		})
		if c.exited() {
			t.Fatalf("child exited early: %s", c.stderr())
		}
		c.kill(t)
		kills++
	}
	c, err := start()
	if err != nil {
		t.Fatal(err)
	}
	defer c.kill(t)
	waitFor(t, 60*time.Second, "every row after the last restart", func() bool { return countLines(path) >= next })
	// Let a duplicate, if the worker wrongly wrote one, show up: publish
	// markers and wait for them, then check.
	publish(2)
	waitFor(t, 20*time.Second, "the marker rows", func() bool { return countLines(path) >= next })
	got := map[string][]int{}
	for _, l := range readLines(t, path) {
		got[l.Stream] = append(got[l.Stream], rowNumber(t, l.Row))
	}
	for _, stream := range []string{"events", "typing"} {
		if fmt.Sprint(got[stream]) != fmt.Sprint(published[stream]) {
			t.Fatalf("%s: the file holds %d rows, %d published; each must be there once, in order", stream, len(got[stream]), len(published[stream]))
		}
	}
	if c.exited() {
		t.Fatalf("child exited: %s", c.stderr())
	}
	t.Logf("%d rows on 2 streams across %d SIGKILLs: each once, in order", next, kills)
}

// countLines counts newlines in path (0 if it does not exist).
func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// TestWorkerStateDirFailure: when positions cannot be saved, rows still
// reach the sink, /healthz says why, and saving resumes once it can.
func TestWorkerStateDirFailure(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "file:" + path
	cfg.SaveInterval = time.Millisecond
	w, _ := startWorker(t, cfg)
	web := httptest.NewServer(w.HTTPHandler(prometheus.NewRegistry()))
	defer web.Close()
	waitFor(t, 10*time.Second, "ready", func() bool { return w.Status().Ready })

	if err := os.RemoveAll(cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	next, _ := publishSeq(m, "events", 0, 5)
	waitFor(t, 10*time.Second, "the state error", func() bool { return w.Status().StateError != nil })
	if body := get(t, web.URL+"/healthz", http.StatusServiceUnavailable); !strings.Contains(body, "cannot save positions") {
		t.Fatalf("/healthz says %q", body)
	}
	waitFor(t, 10*time.Second, "rows still delivered", func() bool { return len(fileLines(t, path)) == next })

	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	next, tok := publishSeq(m, "events", next, 2)
	waitFor(t, 10*time.Second, "saving again", func() bool {
		st := w.Status()
		return st.StateError == nil && st.Positions["events"] == tok
	})
	get(t, web.URL+"/healthz", http.StatusOK)
	checkSequence(t, readLines(t, path), 0, next)
}

func TestWorkerRunsOnce(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "file:" + path
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "ready", func() bool { return w.Status().Ready })
	if err := w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "runs once") {
		t.Fatalf("second Run = %v, want a refusal", err)
	}
	// The refused Run closed nothing: the first still delivers and saves.
	next, tok := publishSeq(m, "events", 0, 3)
	waitFor(t, 10*time.Second, "rows delivered and saved", func() bool {
		return len(fileLines(t, path)) == next && w.Status().Positions["events"] == tok && w.Status().StateError == nil
	})
}

// statusOf reads the worker's GET /v1/status.
func statusOf(t *testing.T, base string) workerapi.Status {
	t.Helper()
	var st workerapi.Status
	if err := json.Unmarshal([]byte(get(t, base+workerapi.StatusPath, http.StatusOK)), &st); err != nil {
		t.Fatalf("decode /v1/status: %v", err)
	}
	return st
}
