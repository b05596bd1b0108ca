package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
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
			for b.Loop() {
				if _, err := ParseCommand(line); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The receive path of a connection: no copy of the row.
	line := []byte(fmt.Sprintf("RDATA caches 123456 %s", benchRow(1)))
	b.Run("RDATA-conn-path", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			name, rest := splitName(line)
			known, _ := internName(name)
			if err := checkLine(known, line); err != nil {
				b.Fatal(err)
			}
			if _, err := parseRdata(rest, false); err != nil {
				b.Fatal(err)
			}
		}
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
			for b.Loop() {
				var err error
				if buf, err = AppendCommand(buf[:0], cmd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What Publish does per update: stored rows are copied, not re-encoded.
	u := Update{Stream: "caches", Token: 123456, Rows: []json.RawMessage{benchRow(1)}}
	b.Run("RDATA-publish-path", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf, _ = appendUpdateLines(buf[:0], u, DefaultMaxLineLength, discardLogger)
		}
		b.SetBytes(int64(len(buf)))
	})
}

func BenchmarkJSON(b *testing.B) {
	r := benchRow(1)
	b.Run("AppendPythonJSON", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf, _ = AppendPythonJSON(buf[:0], r)
		}
	})
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		for b.Loop() {
			if !validJSON(r) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("encoding-json-Valid", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		for b.Loop() {
			if !json.Valid(r) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("encoding-json-Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(r)))
		b.ReportAllocs()
		for b.Loop() {
			var v []any
			if err := json.Unmarshal(r, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// latencyRing records publish times by token, so subscribers can measure
// publish-to-receive latency on a sample of rows.
const (
	latencyRingSize = 1 << 16
	latencySample   = 64 // one row in 64 is timed
)

// fanoutSubscriber is one benchmark subscriber's handler.
type fanoutSubscriber struct {
	decode    bool
	published *[latencyRingSize]atomic.Int64
	received  atomic.Int64
	caughtUp  atomic.Bool
	mu        sync.Mutex
	latencies []time.Duration
	err       atomic.Value
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
	if token%latencySample == 0 {
		if at := s.published[token%latencyRingSize].Load(); at != 0 {
			d := time.Duration(time.Now().UnixNano() - at)
			s.mu.Lock()
			s.latencies = append(s.latencies, d)
			s.mu.Unlock()
		}
	}
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

// BenchmarkFanout publishes 100-byte caches rows to 1, 10 and 100
// subscribers over loopback TCP. Subscribers are real Clients that either
// only parse commands ("parse") or also decode every row with encoding/json
// ("decode"). One op is one row published (and delivered to every
// subscriber). The publisher keeps at most a window of rows in flight, so
// the benchmark measures sustained throughput without tripping the
// slow-consumer limit.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 10, 100} {
		for _, decode := range []bool{false, true} {
			mode := "parse"
			if decode {
				mode = "decode"
			}
			b.Run(fmt.Sprintf("subscribers=%d/%s", subs, mode), func(b *testing.B) { benchFanout(b, subs, decode) })
		}
	}
}

func benchFanout(b *testing.B, nsubs int, decode bool) {
	src := &syntheticSource{stream: "caches"}
	srv, err := NewServer(ServerConfig{ServerName: "bench"}, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		_ = srv.Shutdown(context.Background())
		<-served
	}()

	var published [latencyRingSize]atomic.Int64
	subs := make([]*fanoutSubscriber, nsubs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i := range subs {
		s := &fanoutSubscriber{decode: decode, published: &published}
		subs[i] = s
		c, err := NewClient(ClientConfig{Address: ln.Addr().String(), ServerName: "bench", Handler: s,
			Streams: []StreamRequest{{Stream: "caches", Now: true}}})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	for _, s := range subs {
		for !s.caughtUp.Load() {
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
	// The window stays under half the slow-consumer limit: queued rows plus
	// rows in socket buffers.
	window := int64(DefaultMaxPendingCommands / 2)
	minReceived := func() int64 {
		m := int64(1 << 62)
		for _, s := range subs {
			m = min(m, s.received.Load())
		}
		return m
	}
	b.ResetTimer()
	start := time.Now()
	floor := int64(0)
	for i := 1; i <= b.N; i++ {
		if int64(i)-floor > window {
			for floor = minReceived(); int64(i)-floor > window; floor = minReceived() {
				runtime.Gosched()
			}
		}
		u := src.append()
		u.Rows = rows[i%distinct : i%distinct+1]
		if u.Token%latencySample == 0 {
			published[u.Token%latencyRingSize].Store(time.Now().UnixNano())
		}
		srv.Publish(u)
	}
	for minReceived() < int64(b.N) {
		for _, s := range subs {
			if err, ok := s.err.Load().(error); ok {
				b.Fatalf("subscriber failed: %v", err)
			}
		}
		runtime.Gosched()
	}
	elapsed := time.Since(start)
	b.StopTimer()

	var lat []time.Duration
	for _, s := range subs {
		s.mu.Lock()
		lat = append(lat, s.latencies...)
		s.mu.Unlock()
	}
	b.ReportMetric(float64(b.N)*float64(nsubs)/elapsed.Seconds(), "rows/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

func allLive(srv *Server) bool {
	for _, c := range srv.Connections() {
		if len(c.Subscriptions) != 1 || c.Subscriptions[0].State != "subscribed" {
			return false
		}
	}
	return true
}
