package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// heldProxy forwards TCP connections to target, but holds what clients send
// until release is closed: the master lists each connection (accepted,
// unnamed) before it has read a byte of it. Its connections to the target
// come from its own address, as through a Kubernetes Service, so the master
// does not see the client's local address.
type heldProxy struct {
	ln      net.Listener
	target  string
	release chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func startHeldProxy(t *testing.T, target string) *heldProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &heldProxy{ln: ln, target: target, release: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *heldProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() {
			_, _ = io.Copy(in, out)
			_ = in.Close()
		})
		p.wg.Go(func() {
			select {
			case <-p.release:
				_, _ = io.Copy(out, in)
			case <-time.After(time.Minute):
			}
			_ = out.Close()
		})
	}
}

// TestOnceThroughAProxyOmitsItsOwnConnection reproduces `make demo`'s probe
// table, which listed an "anon" connection next to the workers: the probe
// reaches the master through a Service (a proxy) and read the connection
// table before the master had read its NAME. Its connection was then
// unnamed and came from the proxy's address, so neither the name nor the
// local address told it apart. Here the first table read is made to list it
// that way; the snapshot must still show no connection but the worker's.
func TestOnceThroughAProxyOmitsItsOwnConnection(t *testing.T) {
	replAddr, httpURL, _ := realMaster(t)
	ctx := context.Background()

	// A worker, named and subscribed, directly.
	worker, err := replication.NewClient(replication.ClientConfig{
		Address: replAddr, ServerName: testServerName, Name: "worker-1",
		Streams: []replication.StreamRequest{{Stream: "caches", Now: true}},
		Handler: nopHandler{},
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(wctx) }()
	t.Cleanup(func() {
		stopWorker()
		if err := <-workerDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("worker: %v", err)
		}
	})
	waitForTable(t, httpURL, func(conns []Connection) bool {
		return len(conns) == 1 && conns[0].Name == "worker-1"
	})

	proxy := startHeldProxy(t, replAddr)
	// The HTTP API as the probe sees it: the first table read is answered
	// once the master lists the probe's connection unnamed, and then the
	// proxy lets the probe's commands through.
	target, err := url.Parse(httpURL)
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(target)
	transport := &http.Transport{}
	forward.Transport = transport
	var first sync.Once
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served := false
		if r.URL.Path == connectionsPath {
			first.Do(func() {
				// Answered with the probe's connection unnamed, and
				// only then are its commands let through.
				defer close(proxy.release)
				waitForTable(t, httpURL, func(conns []Connection) bool {
					for _, c := range conns {
						if c.Name == "anon" {
							return true
						}
					}
					return false
				})
				forward.ServeHTTP(w, r)
				served = true
			})
		}
		if !served {
			forward.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() {
		api.Close()
		transport.CloseIdleConnections()
	})

	cfg := fastConfig(t, proxy.ln.Addr().String())
	cfg.HTTPURL = api.URL
	// Table reads only on demand: an interval's read must not be what
	// hides the probe's connection.
	cfg.HeartbeatInterval = time.Hour
	cfg.StaleAfter = time.Hour
	s, err := Once(ctx, cfg, 30*time.Second)
	if err != nil {
		t.Fatalf("Once: %v", err)
	}
	if !s.ConnectionsAvailable || len(s.Connections) != 1 || s.Connections[0].Name != "worker-1" {
		t.Fatalf("connections %+v, want only worker-1", s.Connections)
	}
}

// waitForTable polls the master's connection table until cond holds.
func waitForTable(t *testing.T, httpURL string, cond func([]Connection) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		client := &http.Client{Transport: &http.Transport{}}
		conns, err := fetchConnections(context.Background(), client, httpURL, "")
		client.CloseIdleConnections()
		if err == nil && cond(conns) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("connection table: %+v, %v", conns, err)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
