package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testServerName = "test.example.org"

// fastConfig is a probe config with short intervals so tests finish fast.
func fastConfig(t *testing.T, addr string) Config {
	return Config{
		Address:           addr,
		ServerName:        testServerName,
		HeartbeatInterval: 20 * time.Millisecond,
		StaleAfter:        2 * time.Second,
		Logger:            testr.New(t),
		InitialBackoff:    5 * time.Millisecond,
		MaxBackoff:        50 * time.Millisecond,
	}
}

// runProbe starts p.Run and stops it when the test ends, failing the test if
// Run returned an error.
func runProbe(t *testing.T, cfg Config) *Probe {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

// waitFor polls cond until it holds or the timeout passes; it never sleeps
// for a fixed time to let something happen.
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

func position(s Snapshot, stream string) int64 {
	for _, st := range s.Streams {
		if st.Name == stream {
			return st.Token
		}
	}
	return -1
}

func TestProbePositionsHeartbeatAndConnections(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	for i := range 3 {
		m.Publish("events", probetest.Row(i))
	}
	web := httptest.NewServer(m.HTTPHandler())
	defer web.Close()

	// A worker connection that the probe should list, unlike itself.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	wc, err := replication.NewClient(replication.ClientConfig{Address: m.Addr(), ServerName: testServerName, Name: "worker-0",
		Streams: []replication.StreamRequest{{Stream: "events", Now: true}}, Handler: nopHandler{}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = wc.Run(wctx) })
	defer wg.Wait()
	defer wcancel()

	cfg := fastConfig(t, m.Addr())
	cfg.HTTPURL = web.URL
	cfg.HTTPClient = web.Client()
	p := runProbe(t, cfg)

	waitFor(t, 10*time.Second, "reachable, a heartbeat back, positions and the worker listed", func() bool {
		s := p.Snapshot()
		// A connection is "anon" until its NAME has been read: wait for it.
		return s.Reachable && s.Heartbeat.Samples > 0 && len(s.Connections) == 1 && s.Connections[0].Name == "worker-0" &&
			position(s, "events") == 3
	})
	s := p.Snapshot()
	if s.Error != nil || s.ServerName != testServerName || !s.ConnectionsAvailable || s.Address != m.Addr() {
		t.Fatalf("snapshot = %+v", s)
	}
	if s.Connections[0].Name != "worker-0" {
		t.Fatalf("connections = %+v, want only worker-0", s.Connections)
	}
	if got := position(s, "events"); got != 3 {
		t.Fatalf("events position = %d, want 3", got)
	}
	tok := m.Publish("events", probetest.Row(9), probetest.Row(10))
	waitFor(t, 10*time.Second, "the new events token", func() bool { return position(p.Snapshot(), "events") == tok })
	s = p.Snapshot()
	if s.Heartbeat.P50 <= 0 || s.Heartbeat.Max < s.Heartbeat.P50 || s.Heartbeat.LastSeen.IsZero() || s.Heartbeat.Stale {
		t.Fatalf("heartbeat = %+v", s.Heartbeat)
	}
	// Heartbeats advance the caches stream too.
	if position(s, "caches") < 1 {
		t.Fatalf("caches position = %d", position(s, "caches"))
	}
	if names := streamNames(s); names != "caches,events" {
		t.Fatalf("streams = %s, want sorted caches,events", names)
	}
}

func streamNames(s Snapshot) string {
	var names []string
	for _, st := range s.Streams {
		names = append(names, st.Name)
	}
	return strings.Join(names, ",")
}

type nopHandler struct{}

func (nopHandler) HandleRows(context.Context, string, int64, []json.RawMessage) error { return nil }
func (nopHandler) HandlePosition(string, int64)                                       {}
func (nopHandler) HandleConnectionState(replication.ClientState, error)               {}

// TestProbeHeartbeatLatencyMeasured delays the master's relay and checks the
// probe sees the delay: latency is measured, not assumed.
func TestProbeHeartbeatLatencyMeasured(t *testing.T) {
	m := probetest.Start(t, testServerName)
	const delay = 50 * time.Millisecond
	m.RelayDelay.Store(int64(delay))
	p := runProbe(t, fastConfig(t, m.Addr()))
	waitFor(t, 10*time.Second, "5 heartbeats", func() bool { return p.Snapshot().Heartbeat.Samples >= 5 })
	hb := p.Snapshot().Heartbeat
	if hb.P50 < delay || hb.P99 < hb.P50 || hb.Max < hb.P99 || hb.Last < delay {
		t.Fatalf("heartbeat = %+v, want p50 >= %v", hb, delay)
	}
	t.Logf("relay delayed %v: last=%v p50=%v p99=%v max=%v samples=%d", delay, hb.Last, hb.P50, hb.P99, hb.Max, hb.Samples)
}

func TestProbeHeartbeatStale(t *testing.T) {
	m := probetest.Start(t, testServerName)
	m.RelayDelay.Store(int64(time.Hour)) // never comes back during the test
	cfg := fastConfig(t, m.Addr())
	cfg.StaleAfter = 100 * time.Millisecond
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, 10*time.Second, "a stale heartbeat", func() bool { return p.Snapshot().Heartbeat.Stale })
	s := p.Snapshot()
	if !s.Reachable || s.Heartbeat.Samples != 0 {
		t.Fatalf("snapshot = %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestProbeWrongServerName(t *testing.T) {
	m := probetest.Start(t, "other.example.org")
	start := time.Now()
	s, err := Once(context.Background(), fastConfig(t, m.Addr()), 10*time.Second)
	if !errors.Is(err, ErrWrongServerName) || !errors.Is(s.Error, ErrWrongServerName) {
		t.Fatalf("err = %v, want ErrWrongServerName", err)
	}
	if !strings.Contains(err.Error(), "other.example.org") || !strings.Contains(err.Error(), testServerName) {
		t.Fatalf("error %q should name both server names", err)
	}
	if s.Reachable || s.ServerName != "" {
		t.Fatalf("snapshot = %+v", s)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Once took %v; it should answer on the first failed attempt", time.Since(start))
	}
}

func TestProbeUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	s, err := Once(context.Background(), fastConfig(t, addr), 10*time.Second)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(s.ErrorMessage, "connection refused") || s.Reachable {
		t.Fatalf("snapshot = %+v", s)
	}
}

// TestProbeOnceTimesOut: a server that accepts but never speaks gives no
// answer; Once reports unreachable when its wait is up.
func TestProbeOnceTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() { _ = ln.Close() }()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = bufio.NewReader(c).ReadString(0) // until the probe hangs up
		c.Close()
	})
	s, err := Once(context.Background(), fastConfig(t, ln.Addr().String()), 300*time.Millisecond)
	if !errors.Is(err, ErrUnreachable) || s.Reachable {
		t.Fatalf("err = %v, snapshot = %+v; want ErrUnreachable", err, s)
	}
}

// fakeServer serves one scripted conversation: it sends lines, then reads
// until the client hangs up. A line "<close>" closes the connection instead.
func fakeServer(t *testing.T, lines ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				for _, l := range lines {
					if l == "<close>" {
						return
					}
					if _, err := c.Write([]byte(l + "\n")); err != nil {
						return
					}
				}
				_, _ = bufio.NewReader(c).ReadString(0)
			})
		}
	})
	return ln.Addr().String()
}

func TestProbeProtocolErrors(t *testing.T) {
	for name, lines := range map[string][]string{
		"server sent ERROR":      {"SERVER " + testServerName, "ERROR failed to handle replicate: disk on fire", "<close>"},
		"invalid command":        {"SERVER " + testServerName, "REPLICATE events 1"},
		"unparsable POSITION":    {"SERVER " + testServerName, "POSITION events notanumber"},
		"not a replication port": {"HTTP/1.1 400 Bad Request"},
	} {
		t.Run(name, func(t *testing.T) {
			addr := fakeServer(t, lines...)
			_, err := Once(context.Background(), fastConfig(t, addr), 10*time.Second)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
		})
	}
}

func TestProbeWithoutHTTPAPI(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	m.Publish("events", probetest.Row(1))

	t.Run("no URL: positions, no connections, no error", func(t *testing.T) {
		s, err := Once(context.Background(), fastConfig(t, m.Addr()), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Reachable || s.ConnectionsAvailable || position(s, "events") != 1 || s.Heartbeat.Samples == 0 {
			t.Fatalf("snapshot = %+v", s)
		}
	})
	t.Run("URL that does not answer: positions and ErrHTTPUnreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		_ = ln.Close()
		cfg := fastConfig(t, m.Addr())
		cfg.HTTPURL = url
		s, err := Once(context.Background(), cfg, 10*time.Second)
		if !errors.Is(err, ErrHTTPUnreachable) {
			t.Fatalf("err = %v, want ErrHTTPUnreachable", err)
		}
		if !s.Reachable || s.ConnectionsAvailable || position(s, "events") != 1 {
			t.Fatalf("snapshot = %+v", s)
		}
	})
}

func probeConnID(m *probetest.Master) uint64 {
	for _, c := range m.Connections() {
		if c.Name == ProbeName {
			return c.ID
		}
	}
	return 0
}

func TestProbeMasterRestart(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	p := runProbe(t, fastConfig(t, m.Addr()))
	waitFor(t, 10*time.Second, "reachable with a heartbeat", func() bool {
		s := p.Snapshot()
		return s.Reachable && s.Heartbeat.Samples > 0
	})
	m.Stop()
	waitFor(t, 10*time.Second, "unreachable", func() bool {
		s := p.Snapshot()
		return !s.Reachable && errors.Is(s.Error, ErrUnreachable)
	})
	// Rows written while the master is down are there when it is back.
	tok := m.Publish("events", probetest.Row(1))
	before := p.Snapshot().Heartbeat.Samples
	m.Restart()
	waitFor(t, 10*time.Second, "reachable again at the new position with new heartbeats", func() bool {
		s := p.Snapshot()
		return s.Reachable && position(s, "events") == tok && s.Heartbeat.Samples > before && s.Error == nil
	})
	tok = m.Publish("events", probetest.Row(2))
	waitFor(t, 10*time.Second, "live rows after the restart", func() bool { return position(p.Snapshot(), "events") == tok })
}

func TestProbeConnectionCut(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	proxy := probetest.StartProxy(t, m.Addr())
	p := runProbe(t, fastConfig(t, proxy.Addr()))
	waitFor(t, 10*time.Second, "reachable", func() bool { return p.Snapshot().Reachable })
	first := probeConnID(m)
	proxy.Sever()
	tok := m.Publish("events", probetest.Row(1))
	waitFor(t, 10*time.Second, "a new connection that caught up", func() bool {
		id := probeConnID(m)
		return id != 0 && id != first && p.Snapshot().Reachable && position(p.Snapshot(), "events") == tok
	})
}

func TestProbeMetrics(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	m.Publish("events", probetest.Row(1))
	reg := prometheus.NewRegistry()
	cfg := fastConfig(t, m.Addr())
	cfg.Registerer = reg
	cfg.MasterNamespace, cfg.MasterName = "apps", "m1"
	p := runProbe(t, cfg)
	waitFor(t, 10*time.Second, "a heartbeat", func() bool { return p.Snapshot().Heartbeat.Samples > 0 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				if l.GetName() == "stream" || l.GetName() == "quantile" {
					key += "/" + l.GetValue()
				}
				if l.GetName() == "master" && l.GetValue() != "m1" {
					t.Errorf("%s has master=%q, want the resource's name m1", mf.GetName(), l.GetValue())
				}
				if l.GetName() == "namespace" && l.GetValue() != "apps" {
					t.Errorf("%s has namespace=%q, want apps", mf.GetName(), l.GetValue())
				}
				if l.GetName() == "address" && (mf.GetName() != "tcprepl_probe_info" || l.GetValue() != m.Addr()) {
					t.Errorf("%s has address=%q; only tcprepl_probe_info carries the address (%s)", mf.GetName(), l.GetValue(), m.Addr())
				}
			}
			if mt.GetGauge() != nil {
				got[key] = mt.GetGauge().GetValue()
			}
		}
	}
	if got["tcprepl_probe_up"] != 1 || got["tcprepl_probe_info"] != 1 || got["tcprepl_probe_stream_position/events"] != 1 || got["tcprepl_probe_heartbeat_latency_seconds/0.5"] <= 0 {
		t.Fatalf("metrics = %v", got)
	}
	// A second probe of the same master on the same registry is refused
	// while the first runs, with an error that says so.
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("second probe Run = %v, want a registration error", err)
	}
}

func TestProbeRunTwice(t *testing.T) {
	m := probetest.Start(t, testServerName)
	p := runProbe(t, fastConfig(t, m.Addr()))
	waitFor(t, 10*time.Second, "reachable", func() bool { return p.Snapshot().Reachable })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Run(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("second concurrent Run = %v, want an immediate error", err)
	}
	// The refused Run left the running one alone: it still reports a
	// lost connection as such.
	m.Stop()
	waitFor(t, 10*time.Second, "the first Run to report the master unreachable", func() bool {
		s := p.Snapshot()
		return errors.Is(s.Error, ErrUnreachable) && !s.Reachable && !strings.Contains(s.ErrorMessage, "not connected yet")
	})
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no address":                    {ServerName: "x"},
		"no port":                       {Address: "master", ServerName: "x"},
		"no server name":                {Address: "master:9092"},
		"namespace without master name": {Address: "master:9092", ServerName: "x", MasterNamespace: "apps"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	p, err := New(Config{Address: "master:9092", ServerName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.HeartbeatInterval != DefaultHeartbeatInterval || p.cfg.StaleAfter != 3*DefaultHeartbeatInterval || p.cfg.HTTPClient == nil {
		t.Fatalf("defaults not applied: %+v", p.cfg)
	}
	s := p.Snapshot()
	if s.Reachable || !errors.Is(s.Error, ErrUnreachable) || !strings.Contains(s.ErrorMessage, "not connected yet") {
		t.Fatalf("snapshot before Run = %+v", s)
	}
}

// TestOnceSeesEveryStream: the client reports caught up at the first
// POSITION of REPLICATE ALL NOW; Once must still return every stream.
func TestOnceSeesEveryStream(t *testing.T) {
	streams := []string{"events", "backfill", "presence", "typing", "receipts", "push_rules", "pushers",
		"public_rooms", "device_lists", "to_device", "tag_account_data", "account_data", "groups", "user_signature"}
	m := probetest.Start(t, testServerName, streams...)
	for range 3 {
		s, err := Once(context.Background(), fastConfig(t, m.Addr()), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Streams) != len(streams)+1 {
			t.Fatalf("Once saw %d streams (%s), want %d", len(s.Streams), streamNames(s), len(streams)+1)
		}
	}
}

// TestProbeUsesConfigDial: a custom dialer (TLS, tests) is used, and the
// connection's local address is what the probe leaves out of the table.
func TestProbeUsesConfigDial(t *testing.T) {
	m := probetest.Start(t, testServerName)
	var mu sync.Mutex
	var dialed []string
	cfg := fastConfig(t, m.Addr())
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			dialed = append(dialed, c.LocalAddr().String())
			mu.Unlock()
		}
		return c, err
	}
	p := runProbe(t, cfg)
	waitFor(t, 10*time.Second, "reachable", func() bool { return p.Snapshot().Reachable })
	mu.Lock()
	defer mu.Unlock()
	p.mu.Lock()
	own := p.localAddr
	p.mu.Unlock()
	if len(dialed) == 0 || own != dialed[len(dialed)-1] {
		t.Fatalf("dialed %v, probe recorded %q", dialed, own)
	}
}
