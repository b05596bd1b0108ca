// Package bench drives a real tcprepl master over TCP and measures what
// issue 3 asks for: durable publish rate, delivered rate to live
// subscribers, catch-up rate, publish-to-deliver latency, the master's
// peak RSS and the memory of an idle connection.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// Stream is the stream the benchmark publishes to. caches exists on every
// master and its rows carry an integer last field, where the benchmark puts
// the publish time in nanoseconds.
const Stream = "caches"

// Mode says where the master runs.
type Mode string

// Where the master under test runs.
const (
	// InProcess runs the master in the benchmark's own process: the
	// in-process publisher calls Master.Publish directly; memory figures
	// then include the benchmark's clients.
	InProcess Mode = "in-process"
	// Spawn runs `tcprepl master` as a child process, so RSS is the
	// master's alone.
	Spawn Mode = "spawn"
	// External uses a master someone else started (--master, --http).
	External Mode = "external"
)

// Config is one benchmark run.
type Config struct {
	Mode Mode
	// MasterAddr and HTTPURL locate an External master.
	MasterAddr string
	HTTPURL    string
	// MasterPID is an External master's process id, for its RSS.
	MasterPID  int
	ServerName string
	// PublishToken is sent as a bearer token when set.
	PublishToken string
	// DataDir is the log directory of an InProcess or Spawn master; empty
	// means a fresh temporary directory (a durable, fsynced log).
	DataDir string
	// Binary is the tcprepl binary for Spawn (default: this executable).
	Binary string

	Duration    time.Duration // length of each throughput and latency phase
	Subscribers int           // live subscribers
	// SubscriberKind is WireSubscribers (the default) or ClientSubscribers.
	SubscriberKind SubscriberKind
	Publishers     int // concurrent publishers
	BatchRows      int // rows per publish
	RowBytes       int // approximate size of one row's JSON
	CatchUpRows    int // rows in the log for the catch-up phases
	LatencyRate    int // rows/s published during the latency phase
	IdleConns      int // connections opened for the idle-memory phase

	// Phases to run, in their fixed order; empty means all of them.
	Phases []Phase

	Logf func(format string, args ...any)
}

// Phase is one part of a run.
type Phase string

// The phases, in the order a run takes them.
const (
	PhaseIdle             Phase = "idle"
	PhaseCatchUp          Phase = "catchup"
	PhasePublishInProcess Phase = "publish-inprocess"
	PhasePublishHTTP      Phase = "publish-http"
	PhaseLatency          Phase = "latency"
)

// AllPhases lists every phase in run order.
var AllPhases = []Phase{PhaseIdle, PhaseCatchUp, PhasePublishInProcess, PhasePublishHTTP, PhaseLatency}

func (c *Config) runs(p Phase) bool {
	return len(c.Phases) == 0 || slices.Contains(c.Phases, p)
}

// Defaults fills unset fields with the values the aims are stated for.
func (c *Config) Defaults() {
	if c.Mode == "" {
		c.Mode = InProcess
	}
	if c.ServerName == "" {
		c.ServerName = "bench.tcprepl"
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Subscribers == 0 {
		c.Subscribers = 10
	}
	if c.SubscriberKind == "" {
		c.SubscriberKind = WireSubscribers
	}
	if c.Publishers == 0 {
		// Each publish waits for its group commit's fsync, and over HTTP
		// for a request's round trip as well: 32 in flight keep the
		// committer busy (docs/benchmarks.md compares 16, 32 and 64).
		c.Publishers = 32
	}
	if c.BatchRows == 0 {
		c.BatchRows = 100
	}
	if c.RowBytes == 0 {
		c.RowBytes = 100
	}
	if c.CatchUpRows == 0 {
		c.CatchUpRows = 1_000_000
	}
	if c.LatencyRate == 0 {
		c.LatencyRate = 100_000
	}
	if c.IdleConns == 0 {
		c.IdleConns = 1000
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// Throughput is one publish phase.
type Throughput struct {
	Publisher string  `json:"publisher"`
	Rows      int64   `json:"rows"`
	Seconds   float64 `json:"seconds"`
	// PublishRowsPerSec is the durable publish rate (every row acknowledged).
	PublishRowsPerSec float64 `json:"publishRowsPerSec"`
	// DeliveredRowsPerSec is rows received by all subscribers together,
	// from the first publish to the last delivery.
	DeliveredRowsPerSec float64 `json:"deliveredRowsPerSec"`
	// SlowestSubscriberRowsPerSec: the slowest subscriber's own rate; at or
	// near PublishRowsPerSec means every subscriber kept pace.
	SlowestSubscriberRowsPerSec float64 `json:"slowestSubscriberRowsPerSec"`
	// DrainSeconds is how long after the last publish the last subscriber
	// received the last row.
	DrainSeconds float64 `json:"drainSeconds"`
	Subscribers  int     `json:"subscribers"`
	CPU
}

// CPU is the CPU time a phase took in the measured process (the master's
// when spawned or given by pid; the whole benchmark's when in-process),
// per row published and per row delivered. On a machine shared with other
// work the rates above are bounded by the CPU this process got; CPU per row
// says what the same work costs on an idle machine.
type CPU struct {
	CPUSeconds           float64 `json:"cpuSeconds"`
	CPUMicrosPerRowIn    float64 `json:"cpuMicrosPerRowPublished,omitempty"`
	CPUMicrosPerRowOut   float64 `json:"cpuMicrosPerRowDelivered"`
	ProcessCPUUtilised   float64 `json:"processCoresUsed"`
	LoadAverageAtTheTime string  `json:"loadAverage"`
	// ClientCoresUsed is the benchmark process's own CPU (publishers and
	// subscribers) when the master runs elsewhere; it competes for the
	// same cores.
	ClientCoresUsed float64 `json:"clientCoresUsed,omitempty"`
}

// CatchUp is one catch-up phase.
type CatchUp struct {
	Subscribers int     `json:"subscribers"`
	RowsEach    int64   `json:"rowsEach"`
	Seconds     float64 `json:"seconds"`
	// RowsPerSec is rows delivered to all subscribers together per second.
	RowsPerSec float64 `json:"rowsPerSec"`
	CPU
}

// Latency is the publish-to-deliver latency at a fixed publish rate.
type Latency struct {
	RateRowsPerSec int           `json:"rateRowsPerSec"`
	Subscribers    int           `json:"subscribers"`
	Samples        int           `json:"samples"`
	P50            time.Duration `json:"p50"`
	P99            time.Duration `json:"p99"`
	Max            time.Duration `json:"max"`
	AchievedRate   float64       `json:"achievedRowsPerSec"`
	// AckP50 and AckP99 are from the scheduled publish time to the
	// publisher's acknowledgement (durable): the storage's share of the
	// publish-to-deliver latency.
	AckP50 time.Duration `json:"ackP50"`
	AckP99 time.Duration `json:"ackP99"`
}

// Results is everything one run measured.
type Results struct {
	Mode Mode `json:"mode"`
	// Subscribers is the kind of every subscriber in the run.
	Subscribers SubscriberKind `json:"subscribers"`
	Throughput  []Throughput   `json:"throughput"`
	CatchUp     []CatchUp      `json:"catchUp"`
	Latency     *Latency       `json:"latency,omitempty"`
	// PeakRSSBytes is VmHWM of the master's process (the whole benchmark
	// process when InProcess); 0 when unknown.
	PeakRSSBytes int64  `json:"peakRSSBytes"`
	PeakRSSOf    string `json:"peakRSSOf"`
	// BytesPerIdleConn is the master's memory growth per idle connection.
	BytesPerIdleConn float64 `json:"bytesPerIdleConn"`
	IdleConnMethod   string  `json:"idleConnMethod"`
}

// target is the master under test.
type target struct {
	cfg      Config
	addr     string
	httpURL  string
	pid      int
	m        *master.Master // InProcess only
	shutdown func() error
}

// Run runs every phase in order and returns what it measured.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg.Defaults()
	for _, p := range cfg.Phases {
		if !slices.Contains(AllPhases, p) {
			return nil, fmt.Errorf("unknown phase %q: use any of %v", p, AllPhases)
		}
	}
	if cfg.SubscriberKind != WireSubscribers && cfg.SubscriberKind != ClientSubscribers {
		return nil, fmt.Errorf("unknown subscriber kind %q: use %s or %s", cfg.SubscriberKind, WireSubscribers, ClientSubscribers)
	}
	t, err := start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res := &Results{Mode: cfg.Mode, Subscribers: cfg.SubscriberKind}
	runErr := t.run(ctx, res)
	stopErr := t.shutdown()
	if runErr != nil {
		return res, runErr
	}
	return res, stopErr
}

func (t *target) run(ctx context.Context, res *Results) error {
	logf := t.cfg.Logf
	if t.cfg.runs(PhaseIdle) {
		// Idle memory first, while the master is small and quiet.
		logf("idle connections: opening %d", t.cfg.IdleConns)
		per, method, err := t.idleConnBytes(ctx)
		if err != nil {
			return fmt.Errorf("idle connection phase: %w", err)
		}
		res.BytesPerIdleConn, res.IdleConnMethod = per, method
		logf("idle connections: %.0f bytes each (%s)", per, method)
	}
	for _, n := range []int{1, 10} {
		if !t.cfg.runs(PhaseCatchUp) {
			break
		}
		logf("catch-up: %d rows to %d subscriber(s)", t.cfg.CatchUpRows, n)
		cu, err := t.catchUp(ctx, n)
		if err != nil {
			return fmt.Errorf("catch-up phase: %w", err)
		}
		res.CatchUp = append(res.CatchUp, cu)
		logf("catch-up: %d subscriber(s): %.0f rows/s", n, cu.RowsPerSec)
	}
	var publishers []string
	if t.m != nil && t.cfg.runs(PhasePublishInProcess) {
		publishers = append(publishers, "in-process")
	}
	if t.cfg.runs(PhasePublishHTTP) {
		publishers = append(publishers, "http")
	}
	for _, p := range publishers {
		logf("publish: %s, %d publishers, batches of %d, %d subscribers, %s", p, t.cfg.Publishers, t.cfg.BatchRows, t.cfg.Subscribers, t.cfg.Duration)
		tp, err := t.throughput(ctx, p)
		if err != nil {
			return fmt.Errorf("%s publish phase: %w", p, err)
		}
		res.Throughput = append(res.Throughput, tp)
		logf("publish: %s: %.0f rows/s durable, %.0f rows/s delivered", p, tp.PublishRowsPerSec, tp.DeliveredRowsPerSec)
	}
	if t.cfg.runs(PhaseLatency) {
		logf("latency: %d rows/s to %d subscribers for %s", t.cfg.LatencyRate, t.cfg.Subscribers, t.cfg.Duration)
		lat, err := t.latency(ctx)
		if err != nil {
			return fmt.Errorf("latency phase: %w", err)
		}
		res.Latency = lat
		logf("latency: p50 %s p99 %s max %s", lat.P50, lat.P99, lat.Max)
	}
	res.PeakRSSBytes, res.PeakRSSOf = t.peakRSS()
	return nil
}

// start brings up (or locates) the master.
func start(ctx context.Context, cfg Config) (*target, error) {
	t := &target{cfg: cfg, shutdown: func() error { return nil }}
	dataDir := cfg.DataDir
	cleanup := func() {}
	if cfg.Mode != External && dataDir == "" {
		d, err := os.MkdirTemp("", "tcprepl-bench")
		if err != nil {
			return nil, err
		}
		dataDir = d
		cleanup = func() { _ = os.RemoveAll(d) }
	}
	switch cfg.Mode {
	case External:
		if cfg.MasterAddr == "" || cfg.HTTPURL == "" {
			return nil, errors.New("an external master needs both its replication address (--master) and HTTP URL (--http)")
		}
		t.addr, t.httpURL, t.pid = cfg.MasterAddr, strings.TrimRight(cfg.HTTPURL, "/"), cfg.MasterPID
	case InProcess:
		m, err := master.New(masterapi.Config{ServerName: cfg.ServerName, DataDir: dataDir,
			Limits: masterapi.Limits{MaxRequestBytes: 64 << 20}}, master.Options{Logger: logr.Discard()})
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
		cmd := exec.CommandContext(ctx, bin, "master", "--server-name", cfg.ServerName, "--data-dir", dataDir,
			"--replication-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
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
	return t, nil
}

// rowPad makes rows about RowBytes long.
func (t *target) rowPad() string {
	// ["bench_xxx", [SEQ], TS]: about 35 bytes besides the padding.
	return "bench_" + strings.Repeat("x", max(0, t.cfg.RowBytes-35))
}

// batch builds n rows whose last field is ts (ns), keys [seq...].
func appendBatch(rows []json.RawMessage, buf []byte, pad string, seq int64, n int, ts int64) ([]json.RawMessage, []byte) {
	rows = rows[:0]
	buf = buf[:0]
	starts := make([]int, 0, n+1)
	for i := range n {
		starts = append(starts, len(buf))
		buf = append(buf, `["`...)
		buf = append(buf, pad...)
		buf = append(buf, `", [`...)
		buf = strconv.AppendInt(buf, seq+int64(i), 10)
		buf = append(buf, `], `...)
		buf = strconv.AppendInt(buf, ts, 10)
		buf = append(buf, ']')
	}
	starts = append(starts, len(buf))
	for i := range n {
		rows = append(rows, json.RawMessage(buf[starts[i]:starts[i+1]]))
	}
	return rows, buf
}

// publisher publishes one batch and returns its token.
type publisher func(ctx context.Context, rows []json.RawMessage) (int64, error)

func (t *target) publisher(kind string) (publisher, error) {
	switch kind {
	case "in-process":
		if t.m == nil {
			return nil, errors.New("in-process publishing needs an in-process master")
		}
		return func(ctx context.Context, rows []json.RawMessage) (int64, error) {
			return t.m.Publish(ctx, Stream, rows)
		}, nil
	case "http":
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
		url := t.httpURL + "/v1/streams/" + Stream + "/rows"
		return func(ctx context.Context, rows []json.RawMessage) (int64, error) {
			var body bytes.Buffer
			body.WriteString(`{"rows": [`)
			for i, r := range rows {
				if i > 0 {
					body.WriteByte(',')
				}
				body.Write(r)
			}
			body.WriteString("]}")
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
			if err != nil {
				return 0, err
			}
			req.Header.Set("Content-Type", "application/json")
			if t.cfg.PublishToken != "" {
				req.Header.Set("Authorization", "Bearer "+t.cfg.PublishToken)
			}
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
			}
			var out masterapi.PublishResponse
			if err := json.Unmarshal(b, &out); err != nil {
				return 0, fmt.Errorf("POST %s: %w", url, err)
			}
			return out.Token, nil
		}, nil
	}
	return nil, fmt.Errorf("unknown publisher %q", kind)
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

// subscriber counts the rows one subscription receives and, while record is
// set, publish-to-deliver latency from each batch's timestamp. A wire
// subscriber or a replication.Client feeds it.
type subscriber struct {
	cancel  context.CancelFunc
	done    chan error
	rows    atomic.Int64
	lastTok atomic.Int64
	caught  atomic.Bool
	lastAt  atomic.Int64 // unix ns of the last delivery
	firstAt atomic.Int64
	record  atomic.Bool
	mu      sync.Mutex
	latency []time.Duration
	// failed holds why the subscription failed first; nil while it works.
	failed atomic.Pointer[error]
}

func (t *target) subscribe(ctx context.Context, name string, from int64, now bool) (*subscriber, error) {
	s := &subscriber{done: make(chan error, 1)}
	if t.cfg.SubscriberKind == WireSubscribers {
		if err := t.subscribeWire(ctx, s, name, from, now); err != nil {
			return nil, err
		}
		return s, nil
	}
	c, err := replication.NewClient(replication.ClientConfig{
		Address: t.addr, ServerName: t.cfg.ServerName, Name: name,
		Streams: []replication.StreamRequest{{Stream: Stream, Token: from, Now: now}},
		Handler: clientHandler{s},
		// The benchmark's subscribers must not be dropped as slow consumers
		// by their own queue; the server's limit is what is under test.
		MaxPendingCommands: 1 << 20,
	})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go func() { s.done <- c.Run(cctx) }()
	return s, nil
}

func (s *subscriber) stop() {
	s.cancel()
	// Run returns the cancelled context's error; anything else is a failure.
	if err := <-s.done; err != nil && !errors.Is(err, context.Canceled) {
		s.fail(err)
	}
}

func (s *subscriber) fail(err error) {
	s.failed.CompareAndSwap(nil, &err)
}

// delivered records a complete update: its token, its row count and its
// last row, whose last field is the publish time in nanoseconds.
func (s *subscriber) delivered(token, rows int64, lastRow []byte) {
	now := time.Now().UnixNano()
	s.firstAt.CompareAndSwap(0, now)
	s.rows.Add(rows)
	s.lastTok.Store(token)
	s.lastAt.Store(now)
	if s.record.Load() && rows > 0 {
		// One sample per batch: its rows share one publish time.
		if i := bytes.LastIndexByte(lastRow, ' '); i >= 0 && len(lastRow) > i+2 {
			if ts, err := strconv.ParseInt(string(lastRow[i+1:len(lastRow)-1]), 10, 64); err == nil {
				s.mu.Lock()
				s.latency = append(s.latency, time.Duration(now-ts))
				s.mu.Unlock()
			}
		}
	}
}

// position records a POSITION: the subscription is live from here.
func (s *subscriber) position(token int64) {
	if token > s.lastTok.Load() {
		s.lastTok.Store(token)
	}
	s.caught.Store(true)
}

// clientHandler adapts a subscriber to replication.Handler.
type clientHandler struct{ s *subscriber }

func (h clientHandler) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	var last []byte
	if len(rows) > 0 {
		last = rows[len(rows)-1]
	}
	h.s.delivered(token, int64(len(rows)), last)
	return nil
}

func (clientHandler) HandlePosition(string, int64) {}

func (h clientHandler) HandleConnectionState(st replication.ClientState, err error) {
	switch st {
	case replication.ClientCaughtUp:
		h.s.caught.Store(true)
	case replication.ClientDisconnected:
		if err != nil && !errors.Is(err, context.Canceled) {
			h.s.fail(err)
		}
	}
}

// waitAll polls until every subscriber satisfies cond, or the timeout.
func waitAll(ctx context.Context, subs []*subscriber, timeout time.Duration, what string, cond func(*subscriber) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, s := range subs {
			if p := s.failed.Load(); p != nil {
				return fmt.Errorf("%s: a subscriber failed: %w", what, *p)
			}
			ok = ok && cond(s)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: timed out after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// fill publishes n rows in large batches, as fast as the master takes them.
func (t *target) fill(ctx context.Context, n int) (int64, error) {
	kind := "http"
	if t.m != nil {
		kind = "in-process"
	}
	pub, err := t.publisher(kind)
	if err != nil {
		return 0, err
	}
	const batch = 1000
	pad := t.rowPad()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		last atomic.Int64
		errs = make(chan error, t.cfg.Publishers)
	)
	for range t.cfg.Publishers {
		wg.Go(func() {
			var rows []json.RawMessage
			var buf []byte
			for {
				seq := next.Add(batch) - batch
				if seq >= int64(n) {
					return
				}
				rows, buf = appendBatch(rows, buf, pad, seq, int(min(batch, int64(n)-seq)), time.Now().UnixNano())
				tok, err := pub(ctx, rows)
				if err != nil {
					errs <- err
					return
				}
				for {
					l := last.Load()
					if tok <= l || last.CompareAndSwap(l, tok) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return last.Load(), nil
}

// catchUp fills the log with CatchUpRows rows, then times n subscribers
// that start from before them and read them all.
func (t *target) catchUp(ctx context.Context, n int) (CatchUp, error) {
	from, err := t.currentToken(ctx)
	if err != nil {
		return CatchUp{}, err
	}
	upTo, err := t.fill(ctx, t.cfg.CatchUpRows)
	if err != nil {
		return CatchUp{}, err
	}
	runtime.GC()
	subs := make([]*subscriber, n)
	start := time.Now()
	cpu0, self0 := t.cpuTime(), t.selfCPU()
	for i := range subs {
		if subs[i], err = t.subscribe(ctx, fmt.Sprintf("bench-catchup-%d", i), from, false); err != nil {
			return CatchUp{}, err
		}
	}
	defer func() {
		for _, s := range subs {
			s.stop()
		}
	}()
	if err := waitAll(ctx, subs, 10*time.Minute, "catch-up", func(s *subscriber) bool { return s.lastTok.Load() >= upTo }); err != nil {
		return CatchUp{}, err
	}
	secs := time.Since(start).Seconds()
	var rows int64
	for _, s := range subs {
		rows += s.rows.Load()
	}
	return CatchUp{Subscribers: n, RowsEach: rows / int64(n), Seconds: secs, RowsPerSec: float64(rows) / secs,
		CPU: t.cpuSince(cpu0, self0, start, 0, rows)}, nil
}

// liveSubscribers connects Subscribers clients from now on and waits until
// each has caught up.
func (t *target) liveSubscribers(ctx context.Context, name string) ([]*subscriber, error) {
	subs := make([]*subscriber, t.cfg.Subscribers)
	for i := range subs {
		var err error
		if subs[i], err = t.subscribe(ctx, fmt.Sprintf("%s-%d", name, i), 0, true); err != nil {
			return nil, err
		}
	}
	if err := waitAll(ctx, subs, time.Minute, "subscribers connecting", func(s *subscriber) bool { return s.caught.Load() }); err != nil {
		return nil, err
	}
	return subs, nil
}

// throughput publishes as fast as Publishers can for Duration, with live
// subscribers, and measures durable and delivered rates.
func (t *target) throughput(ctx context.Context, kind string) (Throughput, error) {
	pub, err := t.publisher(kind)
	if err != nil {
		return Throughput{}, err
	}
	subs, err := t.liveSubscribers(ctx, "bench-live")
	if err != nil {
		return Throughput{}, err
	}
	defer func() {
		for _, s := range subs {
			s.stop()
		}
	}()
	pad := t.rowPad()
	var (
		wg      sync.WaitGroup
		rows    atomic.Int64
		lastTok atomic.Int64
		errs    = make(chan error, t.cfg.Publishers)
		seq     atomic.Int64
		// inFlight counts publishes sent and not yet acknowledged; the
		// window covers them too, or many publishers passing the check at
		// once would overshoot it.
		inFlight atomic.Int64
	)
	// Publishers stay within a window of tokens of the slowest subscriber,
	// so the phase measures the rate every subscriber keeps pace with. An
	// unpaced in-process publisher otherwise outruns subscribers that share
	// its CPUs and they are closed as slow consumers, which is the server's
	// limit working, not a throughput figure. The window (8,000 commands
	// by default, counting publishes in flight) stays below the server's
	// slow-consumer limit by construction; half of it starved 32
	// publishers over HTTP of work.
	window := int64(max(1, replication.DefaultMaxPendingCommands*8/10/t.cfg.BatchRows))
	slowestSeen := func() int64 {
		m := subs[0].lastTok.Load()
		for _, s := range subs[1:] {
			m = min(m, s.lastTok.Load())
		}
		return m
	}
	start := time.Now()
	cpu0, self0 := t.cpuTime(), t.selfCPU()
	stopAt := start.Add(t.cfg.Duration)
	for range t.cfg.Publishers {
		wg.Go(func() {
			var batch []json.RawMessage
			var buf []byte
			for time.Now().Before(stopAt) {
				if lastTok.Load()+inFlight.Add(1)-slowestSeen() > window {
					inFlight.Add(-1)
					if ctx.Err() != nil {
						break
					}
					time.Sleep(50 * time.Microsecond)
					continue
				}
				s := seq.Add(int64(t.cfg.BatchRows)) - int64(t.cfg.BatchRows)
				batch, buf = appendBatch(batch, buf, pad, s, t.cfg.BatchRows, time.Now().UnixNano())
				tok, err := pub(ctx, batch)
				if err != nil {
					inFlight.Add(-1)
					errs <- err
					return
				}
				rows.Add(int64(len(batch)))
				for {
					l := lastTok.Load()
					if tok <= l || lastTok.CompareAndSwap(l, tok) {
						break
					}
				}
				// Only now: the other order let others see the publish
				// neither in flight nor acknowledged, and overshoot.
				inFlight.Add(-1)
			}
		})
	}
	wg.Wait()
	pubSecs := time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return Throughput{}, err
	}
	published := rows.Load()
	if err := waitAll(ctx, subs, 5*time.Minute, "delivery", func(s *subscriber) bool { return s.rows.Load() >= published }); err != nil {
		return Throughput{}, err
	}
	var lastAt int64
	slowest := 0.0
	for i, s := range subs {
		lastAt = max(lastAt, s.lastAt.Load())
		rate := float64(s.rows.Load()) / time.Duration(s.lastAt.Load()-start.UnixNano()).Seconds()
		if i == 0 || rate < slowest {
			slowest = rate
		}
	}
	deliverSecs := time.Duration(lastAt - start.UnixNano()).Seconds()
	return Throughput{
		Publisher: kind, Rows: published, Seconds: pubSecs, Subscribers: len(subs),
		PublishRowsPerSec:           float64(published) / pubSecs,
		DeliveredRowsPerSec:         float64(published*int64(len(subs))) / deliverSecs,
		SlowestSubscriberRowsPerSec: slowest,
		DrainSeconds:                max(0, deliverSecs-pubSecs),
		CPU:                         t.cpuSince(cpu0, self0, start, published, published*int64(len(subs))),
	}, nil
}

// latency publishes LatencyRate rows/s, in batches of BatchRows on a fixed
// schedule, and measures each batch from its scheduled publish time to its
// delivery at every subscriber. Timing from the schedule, not from when a
// publisher got to it, keeps a stalled publish from hiding its own delay.
func (t *target) latency(ctx context.Context) (*Latency, error) {
	kind := "http"
	if t.m != nil {
		kind = "in-process"
	}
	pub, err := t.publisher(kind)
	if err != nil {
		return nil, err
	}
	subs, err := t.liveSubscribers(ctx, "bench-latency")
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range subs {
			s.stop()
		}
	}()
	for _, s := range subs {
		s.record.Store(true)
	}
	interval := time.Duration(float64(time.Second) * float64(t.cfg.BatchRows) / float64(t.cfg.LatencyRate))
	batches := int(t.cfg.Duration / interval)
	work := make(chan int64, batches)
	pad := t.rowPad()
	// Enough publishers that a batch is never waiting for a free one while
	// another sits in fsync: each publish takes at least one commit round.
	publishers := max(t.cfg.Publishers, 32)
	var (
		wg    sync.WaitGroup
		errs  = make(chan error, publishers)
		ackMu sync.Mutex
		acks  = make([]time.Duration, 0, batches)
	)
	for range publishers {
		wg.Go(func() {
			var batch []json.RawMessage
			var buf []byte
			for ts := range work {
				batch, buf = appendBatch(batch, buf, pad, 0, t.cfg.BatchRows, ts)
				if _, err := pub(ctx, batch); err != nil {
					errs <- err
					return
				}
				ack := time.Duration(time.Now().UnixNano() - ts)
				ackMu.Lock()
				acks = append(acks, ack)
				ackMu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range batches {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		work <- at.UnixNano()
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	want := int64(batches * t.cfg.BatchRows)
	if err := waitAll(ctx, subs, time.Minute, "latency delivery", func(s *subscriber) bool { return s.rows.Load() >= want }); err != nil {
		return nil, err
	}
	var all []time.Duration
	for _, s := range subs {
		s.mu.Lock()
		all = append(all, s.latency...)
		s.mu.Unlock()
	}
	if len(all) == 0 {
		return nil, errors.New("no latency samples")
	}
	slices.Sort(all)
	slices.Sort(acks)
	return &Latency{
		RateRowsPerSec: t.cfg.LatencyRate, Subscribers: len(subs), Samples: len(all),
		P50: quantile(all, 0.50), P99: quantile(all, 0.99), Max: all[len(all)-1],
		AchievedRate: float64(want) / elapsed.Seconds(),
		AckP50:       quantile(acks, 0.50), AckP99: quantile(acks, 0.99),
	}, nil
}

// quantile of sorted durations; 0 for none.
func quantile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// idleConnBytes opens IdleConns raw connections that name themselves and
// subscribe to one stream from now, then stay silent, and measures the
// master's RSS growth per connection. It needs the master in another
// process (spawned, or external with its pid).
func (t *target) idleConnBytes(ctx context.Context) (float64, string, error) {
	n := t.cfg.IdleConns
	if t.m != nil || t.pid == 0 {
		// In-process, the benchmark's own heap, clients and Pebble's lazy
		// allocations blur the master's share beyond use.
		return 0, "not measured: use --spawn, or --master-pid for an external master", nil
	}
	measure := func() (int64, string) {
		rss, err := procStatus(t.pid, "VmRSS")
		if err != nil {
			return 0, "unknown: " + err.Error()
		}
		return rss, "master RSS growth"
	}
	before, method := measure()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var d net.Dialer
	for i := range n {
		c, err := d.DialContext(ctx, "tcp", t.addr)
		if err != nil {
			return 0, "", fmt.Errorf("dial idle connection %d: %w (raise the open-file limit for more)", i, err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "NAME bench-idle-%d\nREPLICATE %s NOW\n", i, Stream); err != nil {
			return 0, "", err
		}
	}
	// Wait until the master lists them all with their subscription.
	deadline := time.Now().Add(time.Minute)
	for {
		idle, err := t.countIdle(ctx)
		if err != nil {
			return 0, "", err
		}
		if idle >= n {
			break
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("only %d of %d idle connections subscribed after a minute", idle, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, _ := measure()
	return float64(after-before) / float64(n), method, nil
}

func (t *target) countIdle(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.httpURL+"/v1/connections?limit=100000", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out masterapi.ConnectionsResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("GET /v1/connections: %w", err)
	}
	n := 0
	for _, c := range out.Connections {
		if strings.HasPrefix(c.Name, "bench-idle-") && len(c.Streams) == 1 {
			n++
		}
	}
	return n, nil
}

func (t *target) peakRSS() (int64, string) {
	if t.pid == 0 {
		return 0, "unknown (give --master-pid)"
	}
	hwm, err := procStatus(t.pid, "VmHWM")
	if err != nil {
		return 0, "unknown: " + err.Error()
	}
	if t.m != nil {
		return hwm, "benchmark process (master and its clients)"
	}
	return hwm, "master process"
}

// cpuTime is the user+system CPU time of the measured process so far.
func (t *target) cpuTime() time.Duration { return processCPU(t.pid) }

// selfCPU is this process's CPU time when the master runs elsewhere.
func (t *target) selfCPU() time.Duration {
	if t.m != nil {
		return 0
	}
	return processCPU(os.Getpid())
}

func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields overall, in clock ticks (100 per second on
	// Linux).
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuSince fills a CPU figure for a phase that began at cpu0/self0/wall0.
func (t *target) cpuSince(cpu0, self0 time.Duration, wall0 time.Time, rowsIn, rowsOut int64) CPU {
	used := (t.cpuTime() - cpu0).Seconds()
	wall := time.Since(wall0).Seconds()
	c := CPU{CPUSeconds: used, ProcessCPUUtilised: used / wall, LoadAverageAtTheTime: loadAverage()}
	if t.m == nil {
		c.ClientCoresUsed = (t.selfCPU() - self0).Seconds() / wall
	}
	if rowsIn > 0 {
		c.CPUMicrosPerRowIn = used * 1e6 / float64(rowsIn)
	}
	if rowsOut > 0 {
		c.CPUMicrosPerRowOut = used * 1e6 / float64(rowsOut)
	}
	return c
}

// procStatus reads one "Key:   N kB" line of /proc/PID/status, in bytes.
func procStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}
