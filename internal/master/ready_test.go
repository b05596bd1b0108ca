package master

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// TestReadyzWhileShuttingDown: from the moment Shutdown starts, while it
// still waits for an HTTP request in flight (the master is still serving),
// /readyz answers 503 "shutting down", so no new traffic is sent to a
// master that is going away; and it keeps saying so once it is down.
func TestReadyzWhileShuttingDown(t *testing.T) {
	m, err := New(masterapi.Config{ServerName: "hs.test"}, Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	// Tell the test when a publish is inside the handler: its connection
	// is then active, and the HTTP server's Shutdown waits for it.
	publishing := make(chan struct{}, 1)
	api := m.httpSrv.Handler
	m.httpSrv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			publishing <- struct{}{}
		}
		api.ServeHTTP(w, r)
	})
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
	h := m.Handler()
	waitFor(t, "ready", func() bool {
		code, _, _ := do(t, h, "GET", "/readyz", "")
		return code == http.StatusOK
	})

	// A publish whose body has not all arrived holds the HTTP server's
	// Shutdown until the connection closes.
	conn, err := net.Dial("tcp", httpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `[["!r", []]]`
	if _, err := fmt.Fprintf(conn, "POST /v1/streams/typing/rows HTTP/1.1\r\nHost: master\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body)+10, body); err != nil {
		t.Fatal(err)
	}
	<-publishing

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- m.Shutdown(ctx)
	}()
	waitFor(t, "Shutdown to start", m.closing.Load)
	if !m.serving.Load() {
		t.Fatal("the master stopped serving with a request in flight")
	}
	checkShuttingDown(t, h, "while shutting down")

	_ = conn.Close() // lets the HTTP server's Shutdown finish
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	checkShuttingDown(t, h, "after shutdown")
}

func checkShuttingDown(t *testing.T, h http.Handler, when string) {
	t.Helper()
	code, out, _ := do(t, h, "GET", "/readyz", "")
	if code != http.StatusServiceUnavailable || out["error"] != "shutting down" {
		t.Fatalf("readyz %s: %d %v, want 503 \"shutting down\"", when, code, out)
	}
}
