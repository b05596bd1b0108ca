// Package probetest gives the probe's and the worker's tests a small master
// (the real protocol server over an in-memory source, relaying
// INVALIDATE_CACHE into the caches stream as tcprepl's master does, with an
// optional delay) and a TCP proxy whose connections a test can cut.
package probetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// Master is a replication server on 127.0.0.1 over a MemorySource. Tokens
// live in the source, so they survive Restart, as a real master's do.
type Master struct {
	Src  *replication.MemorySource
	Name string

	// RelayDelay delays the relay of INVALIDATE_CACHE onto caches, to
	// stand for a slow master.
	RelayDelay atomic.Int64 // nanoseconds

	tb   testing.TB
	addr string

	mu      sync.Mutex // serialises Append+Publish so tokens go out in order
	srv     *replication.Server
	serveWG sync.WaitGroup

	timersMu sync.Mutex
	timers   map[*time.Timer]struct{} // delayed relays not yet run
	timersWG sync.WaitGroup
}

// Start starts a master called name serving streams (caches is always one).
// It is shut down when the test ends.
func Start(tb testing.TB, name string, streams ...string) *Master {
	tb.Helper()
	m := &Master{Src: replication.NewMemorySource(append([]string{"caches"}, streams...)...), Name: name, tb: tb, timers: map[*time.Timer]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("probetest: listen: %v", err)
	}
	m.addr = ln.Addr().String()
	m.serve(ln)
	tb.Cleanup(func() {
		m.Stop()
		m.cancelRelays()
	})
	return m
}

// Addr is the master's replication address.
func (m *Master) Addr() string { return m.addr }

func (m *Master) serve(ln net.Listener) {
	srv, err := replication.NewServer(replication.ServerConfig{ServerName: m.Name}, m.Src, relay{m})
	if err != nil {
		m.tb.Fatalf("probetest: new server: %v", err)
	}
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	m.serveWG.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, replication.ErrServerClosed) {
			m.tb.Errorf("probetest: serve: %v", err)
		}
	})
}

// Stop shuts the server down (the listener too); Restart brings it back on
// the same address.
func (m *Master) Stop() {
	m.mu.Lock()
	srv := m.srv
	m.srv = nil
	m.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		m.tb.Errorf("probetest: shutdown: %v", err)
	}
	m.serveWG.Wait()
}

// Restart stops the server if it runs and serves again on the same address.
func (m *Master) Restart() {
	m.tb.Helper()
	m.Stop()
	var ln net.Listener
	var err error
	// The old socket may linger a moment; retry briefly.
	for range 100 {
		if ln, err = net.Listen("tcp", m.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		m.tb.Fatalf("probetest: listen again on %s: %v", m.addr, err)
	}
	m.serve(ln)
}

// Publish appends rows as the next token of stream and sends them to the
// subscribers (whether or not the server is running), returning the token.
func (m *Master) Publish(stream string, rows ...json.RawMessage) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.Src.Append(stream, rows...)
	if m.srv != nil {
		m.srv.Publish(u)
	}
	return u.Token
}

// Connections is the server's connection table (nil while stopped).
func (m *Master) Connections() []replication.ConnectionInfo {
	m.mu.Lock()
	srv := m.srv
	m.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Connections()
}

// cancelRelays drops the delayed relays not yet run and waits for those
// running, so none outlives the test.
func (m *Master) cancelRelays() {
	m.timersMu.Lock()
	for t := range m.timers {
		if t.Stop() {
			m.timersWG.Done()
		}
		delete(m.timers, t)
	}
	m.timersMu.Unlock()
	m.timersWG.Wait()
}

// relay is the server's handler: INVALIDATE_CACHE becomes a caches row
// [cache_func, keys, invalidation_ts], as tcprepl's master does.
type relay struct{ m *Master }

func (r relay) HandleCommand(_ *replication.ServerConn, cmd replication.Command) error {
	ic, ok := cmd.(replication.InvalidateCacheCommand)
	if !ok {
		return nil
	}
	fn, err := json.Marshal(ic.CacheFunc)
	if err != nil {
		return fmt.Errorf("encode cache_func: %w", err)
	}
	row := json.RawMessage(fmt.Sprintf("[%s, %s, %d]", fn, ic.Keys, time.Now().UnixMilli()))
	if d := time.Duration(r.m.RelayDelay.Load()); d > 0 {
		r.m.timersMu.Lock()
		defer r.m.timersMu.Unlock()
		r.m.timersWG.Add(1)
		var t *time.Timer
		t = time.AfterFunc(d, func() {
			defer r.m.timersWG.Done()
			r.m.timersMu.Lock()
			delete(r.m.timers, t)
			r.m.timersMu.Unlock()
			r.m.Publish("caches", row)
		})
		r.m.timers[t] = struct{}{}
		return nil
	}
	r.m.Publish("caches", row)
	return nil
}

func (relay) ConnectionClosed(*replication.ServerConn, string) {}

// HTTPHandler serves GET /v1/connections from the server's connection table
// (seconds behind is left 0: the memory source keeps no publish times).
func (m *Master) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/connections", func(w http.ResponseWriter, _ *http.Request) {
		out := []masterapi.Connection{}
		for _, c := range m.Connections() {
			cj := masterapi.Connection{ID: c.ID, Name: c.Name, RemoteAddr: c.RemoteAddr, State: fmt.Sprint(c.State), ConnectedSince: c.ConnectedSince, Streams: []masterapi.ConnectionStream{}}
			for _, s := range c.Subscriptions {
				cur, _ := m.Src.CurrentToken(s.Stream)
				cj.Streams = append(cj.Streams, masterapi.ConnectionStream{Name: s.Stream, Token: s.LastToken, TokensBehind: max(cur-s.LastToken, 0)})
			}
			out = append(out, cj)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// Row makes a row holding n, in the Python-style JSON the server expects.
func Row(n int) json.RawMessage {
	return json.RawMessage("[" + strconv.Itoa(n) + ", \"r\"]")
}

// Proxy forwards TCP connections to a target; Sever cuts the live ones (the
// listener stays, so clients can reconnect).
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// StartProxy listens on 127.0.0.1 and forwards to target until the test ends.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("probetest: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			in.Close()
			out.Close()
			return
		}
		p.wg.Go(func() { p.pipe(in, out) })
		p.wg.Go(func() { p.pipe(out, in) })
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	// One direction ended: end both, as a cut cable would.
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Sever closes every live connection through the proxy.
func (p *Proxy) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Live is the number of connections through the proxy not yet severed
// (counting both of each pair's sockets once).
func (p *Proxy) Live() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// Close stops the proxy and cuts its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Sever()
	p.wg.Wait()
}
