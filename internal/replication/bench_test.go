package replication

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
)

// benchRow returns a caches row of exactly 100 bytes, as the issue's
// benchmarks ask for.
func benchRow(i int) json.RawMessage {
	head := fmt.Sprintf(`["get_user_by_id", ["@user%010d:matrix.example.com"], 1490197670513, "`, i)
	return json.RawMessage(head + strings.Repeat("x", 100-len(head)-2) + `"]`)
}

var discardLogger = logr.Discard()

func BenchmarkParse(b *testing.B) {
	done := map[string]bool{}
	for _, tc := range canonicalLines {
		if done[tc.cmd.Name()] {
			continue
		}
		done[tc.cmd.Name()] = true
		line := []byte(tc.line)
		b.Run(tc.cmd.Name(), func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpuLoop(b, func() {
				if _, err := ParseCommand(line); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
	// The receive path of a connection: no copy of the row.
	line := []byte(fmt.Sprintf("RDATA caches 123456 %s", benchRow(1)))
	b.Run("RDATA-conn-path", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		cpuLoop(b, func() {
			_, rest := splitName(line)
			if _, err := parseRdata(rest, false); err != nil {
				b.Fatal(err)
			}
		})
	})
}

func BenchmarkFormat(b *testing.B) {
	done := map[string]bool{}
	for _, tc := range canonicalLines {
		if done[tc.cmd.Name()] {
			continue
		}
		done[tc.cmd.Name()] = true
		cmd := tc.cmd
		b.Run(cmd.Name(), func(b *testing.B) {
			b.SetBytes(int64(len(tc.line)))
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			cpuLoop(b, func() {
				var err error
				if buf, err = AppendCommand(buf[:0], cmd); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
	// What Publish does per update: stored rows are copied, not re-encoded.
	u := Update{Stream: "caches", Token: 123456, Rows: []json.RawMessage{benchRow(1)}}
	b.Run("RDATA-publish-path", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		cpuLoop(b, func() {
			buf, _ = appendUpdateLines(buf[:0], u, DefaultMaxLineLength, discardLogger)
		})
		b.SetBytes(int64(len(buf)))
	})
}

func BenchmarkJSON(b *testing.B) {
	r := benchRow(1)
	b.Run("AppendPythonJSON", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		cpuLoop(b, func() {
			buf, _ = AppendPythonJSON(buf[:0], r)
		})
	})
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		cpuLoop(b, func() {
			if !jsonscan.Valid(r) {
				b.Fatal("invalid")
			}
		})
	})
	b.Run("encoding-json-Valid", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		cpuLoop(b, func() {
			if !json.Valid(r) {
				b.Fatal("invalid")
			}
		})
	})
	b.Run("encoding-json-Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		cpuLoop(b, func() {
			var v []any
			if err := json.Unmarshal(r, &v); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// cpuLoop runs body b.N times on one locked OS thread and also reports the
// thread's CPU time per op ("cpu-ns/op"). On a shared, oversubscribed
// machine wall-clock ns/op counts the time other processes held the CPU;
// the thread's CPU time does not (GC work on other threads is not counted).
func cpuLoop(b *testing.B, body func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPUTime()
	for b.Loop() {
		body()
	}
	b.ReportMetric(float64(threadCPUTime()-start)/float64(b.N), "cpu-ns/op")
}

// threadCPUTime is the calling OS thread's user plus system CPU time.
func threadCPUTime() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD on Linux
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// latencyRing records publish times by token, so subscribers can measure
// publish-to-receive latency on a sample of rows.
const (
	latencyRingSize = 1 << 16
	latencySample   = 64 // one row in 64 is timed
)

// fanoutWindow is how many rows the fan-out benchmark's publisher keeps in
// flight (published, not yet received by the slowest subscriber). The
// default, half the default slow-consumer limit, is what a master with
// default settings sustains; on a loaded machine, where every hand-off
// waits for a CPU, throughput is window / latency, and a larger window
// (the server's limit is raised to twice it) shows the engine's capacity.
var fanoutWindow = flag.Int("fanout.window", DefaultMaxPendingCommands/2, "rows in flight in BenchmarkFanout")

// Subscriber kinds of the fan-out benchmark.
const (
	// subCount reads the socket and counts lines: what the server alone
	// can deliver (compare BenchmarkCopyLimit's "copy").
	subCount = "count"
	// subParse reads lines and parses each as the connection's read loop
	// does (line checks, RDATA parse with row validation): the (a).
	subParse = "parse"
	// subClient is a full Client: parse, batch, copy the row, hand it to
	// a handler.
	subClient = "client"
	// subDecode is a full Client whose handler also decodes every row with
	// encoding/json: the (b).
	subDecode = "decode"
)

// BenchmarkFanout publishes 100-byte caches rows, one row per token, to 1,
// 10 and 100 subscribers over loopback TCP. One op is one row published
// (and delivered to every subscriber). The publisher keeps at most a window
// of rows in flight, so the benchmark measures sustained throughput without
// tripping the slow-consumer limit; latencies are therefore those of a
// saturated pipeline (mostly time spent in that window).
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 10, 100} {
		for _, kind := range []string{subCount, subParse, subClient, subDecode} {
			b.Run(fmt.Sprintf("subscribers=%d/%s", subs, kind), func(b *testing.B) { benchFanout(b, subs, kind) })
		}
	}
}

// fanoutSub is what the publisher needs from a subscriber.
type fanoutSub interface {
	receivedRows() int64
	failure() error
	isCaughtUp() bool
	sampled() []time.Duration
}

type subStats struct {
	published *[latencyRingSize]atomic.Int64
	received  atomic.Int64
	caughtUp  atomic.Bool
	mu        sync.Mutex
	latencies []time.Duration
	err       atomic.Value
}

func (s *subStats) receivedRows() int64 { return s.received.Load() }
func (s *subStats) isCaughtUp() bool    { return s.caughtUp.Load() }
func (s *subStats) failure() error {
	err, _ := s.err.Load().(error)
	return err
}
func (s *subStats) sampled() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latencies
}

// sample records the latency of a sampled token.
func (s *subStats) sample(token int64) {
	if token%latencySample != 0 {
		return
	}
	if at := s.published[token%latencyRingSize].Load(); at != 0 {
		d := time.Duration(time.Now().UnixNano() - at)
		s.mu.Lock()
		s.latencies = append(s.latencies, d)
		s.mu.Unlock()
	}
}

// fanoutSubscriber is a Client handler.
type fanoutSubscriber struct {
	subStats
	decode bool
}

func (s *fanoutSubscriber) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	if s.decode {
		for _, r := range rows {
			var v []any
			if err := json.Unmarshal(r, &v); err != nil {
				s.err.Store(err)
				return err
			}
		}
	}
	s.sample(token)
	s.received.Add(int64(len(rows)))
	return nil
}

func (s *fanoutSubscriber) HandlePosition(string, int64) {}

func (s *fanoutSubscriber) HandleConnectionState(st ClientState, err error) {
	if st == ClientCaughtUp {
		s.caughtUp.Store(true)
	}
	if st == ClientDisconnected && err != nil && s.caughtUp.Load() {
		s.err.Store(err)
	}
}

// rawSubscriber speaks the protocol by hand and only counts or parses.
type rawSubscriber struct {
	subStats
	parse bool
}

func (s *rawSubscriber) run(addr string) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		s.err.Store(err)
		return
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("REPLICATE caches NOW\n")); err != nil {
		s.err.Store(err)
		return
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			s.err.Store(err)
			return
		}
		if bytes.HasPrefix(line, []byte("POSITION ")) {
			break
		}
	}
	s.caughtUp.Store(true)
	if !s.parse {
		buf := make([]byte, 64<<10)
		for {
			n, err := br.Read(buf)
			s.received.Add(int64(bytes.Count(buf[:n], []byte{'\n'})))
			if err != nil {
				return
			}
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		line = line[:len(line)-1]
		name, rest := splitName(line)
		known, _ := internName(name)
		if known != CmdRdata {
			continue // PING
		}
		cmd, err := parseRdata(rest, false)
		if err != nil {
			s.err.Store(err)
			return
		}
		s.sample(cmd.Token)
		s.received.Add(1)
	}
}

func benchFanout(b *testing.B, nsubs int, kind string) { benchFanoutAt(b, nsubs, kind, 0) }

// BenchmarkFanoutLatency publishes at a steady rate well below what the
// subscribers can take (20,000 rows/s, and at most 200,000 deliveries/s in
// all), so the latencies are those of an unloaded pipeline rather than of a
// saturated one.
func BenchmarkFanoutLatency(b *testing.B) {
	for _, subs := range []int{1, 10, 100} {
		rate := min(20000, 200000/subs)
		b.Run(fmt.Sprintf("subscribers=%d/client", subs), func(b *testing.B) { benchFanoutAt(b, subs, subClient, rate) })
	}
}

// benchFanoutAt runs the fan-out benchmark; with rate > 0 the publisher
// sends that many rows per second (in bursts every millisecond) instead of
// as fast as the window allows.
func benchFanoutAt(b *testing.B, nsubs int, kind string, rate int) {
	src := &syntheticSource{stream: "caches"}
	window := int64(*fanoutWindow)
	// The slow-consumer limit must stay above the window: the rows in
	// flight are queued or in socket buffers.
	srv, err := NewServer(ServerConfig{ServerName: "bench", MaxPendingCommands: max(DefaultMaxPendingCommands, 2*int(window))}, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		_ = srv.Shutdown(context.Background())
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			b.Errorf("Serve: %v", err)
		}
		wg.Wait()
	}()

	var published [latencyRingSize]atomic.Int64
	subs := make([]fanoutSub, nsubs)
	for i := range subs {
		switch kind {
		case subCount, subParse:
			s := &rawSubscriber{subStats: subStats{published: &published}, parse: kind == subParse}
			subs[i] = s
			wg.Add(1)
			go func() { defer wg.Done(); s.run(ln.Addr().String()) }()
		default:
			s := &fanoutSubscriber{subStats: subStats{published: &published}, decode: kind == subDecode}
			subs[i] = s
			c, err := NewClient(ClientConfig{Address: ln.Addr().String(), ServerName: "bench", Handler: s,
				Streams: []StreamRequest{{Stream: "caches", Now: true}}})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Run(ctx) }()
		}
	}
	for _, s := range subs {
		for !s.isCaughtUp() {
			if err := s.failure(); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for len(srv.Connections()) != nsubs || !allLive(srv) {
		time.Sleep(time.Millisecond)
	}

	const distinct = 4096
	rows := make([]json.RawMessage, distinct)
	for i := range rows {
		rows[i] = benchRow(i)
	}
	lineLen := len(fmt.Sprintf("RDATA caches %d %s\n", 1000000, rows[0]))
	b.SetBytes(int64(lineLen * nsubs))
	minReceived := func() int64 {
		m := int64(1 << 62)
		for _, s := range subs {
			m = min(m, s.receivedRows())
		}
		return m
	}
	b.ResetTimer()
	start := time.Now()
	cpuStart := processCPUTime()
	floor := int64(0)
	perTick := rate / 1000
	for i := 1; i <= b.N; i++ {
		if perTick > 0 && i%perTick == 0 {
			// Keep to the rate: the i-th row is due at i/rate seconds.
			if due := start.Add(time.Duration(i) * time.Second / time.Duration(rate)); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
		}
		if int64(i)-floor > window {
			// Sleep rather than spin: on two cores a spinning
			// publisher takes CPU from the subscribers it waits for.
			for floor = minReceived(); int64(i)-floor > window; floor = minReceived() {
				time.Sleep(20 * time.Microsecond)
			}
		}
		u := src.nextToken()
		u.Rows = rows[i%distinct : i%distinct+1]
		if u.Token%latencySample == 0 {
			published[u.Token%latencyRingSize].Store(time.Now().UnixNano())
		}
		srv.Publish(u)
	}
	for minReceived() < int64(b.N) {
		for _, s := range subs {
			if err := s.failure(); err != nil {
				b.Fatalf("subscriber failed: %v", err)
			}
		}
		time.Sleep(20 * time.Microsecond)
	}
	elapsed := time.Since(start)
	cpu := processCPUTime() - cpuStart
	b.StopTimer()

	var lat []time.Duration
	for _, s := range subs {
		lat = append(lat, s.sampled()...)
	}
	delivered := float64(b.N) * float64(nsubs)
	b.ReportMetric(delivered/elapsed.Seconds(), "rows/s")
	// CPU per delivered row (server, subscribers and their syscalls, all in
	// this process) is what the rows/s of an idle machine follow from; the
	// shared 2-core machine these ran on was rarely idle.
	b.ReportMetric(float64(cpu.Nanoseconds())/delivered, "cpu-ns/row")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// processCPUTime is the user plus system CPU time of this process so far.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func allLive(srv *Server) bool {
	for _, c := range srv.Connections() {
		if len(c.Subscriptions) != 1 || c.Subscriptions[0].State != "subscribed" {
			return false
		}
	}
	return true
}
