package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const connectionsJSON = `[
 {"id": 1, "name": "tcprepl-probe", "remoteAddr": "127.0.0.1:5000", "state": "streaming", "connectedSince": "2026-11-26T19:00:00Z", "streams": [], "maxSecondsBehind": 0},
 {"id": 2, "name": "worker-0", "remoteAddr": "10.0.0.5:45678", "state": "streaming", "connectedSince": "2026-11-26T19:01:00Z",
  "streams": [{"name": "events", "token": 90, "tokensBehind": 10, "secondsBehind": 1.5}, {"name": "caches", "token": 4, "tokensBehind": 0, "secondsBehind": 0}],
  "maxSecondsBehind": 1.5, "pendingCommands": 3}
]`

func TestFetchConnections(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
	}{
		{"bare array", connectionsJSON},
		{"envelope", `{"connections": ` + connectionsJSON + `, "total": 2}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/connections" || r.Method != http.MethodGet {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			conns, err := fetchConnections(context.Background(), srv.Client(), srv.URL+"/", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(conns) != 1 {
				t.Fatalf("got %d connections, want 1 (the probe's own left out): %+v", len(conns), conns)
			}
			c := conns[0]
			want := time.Date(2026, 11, 26, 19, 1, 0, 0, time.UTC)
			if c.ID != 2 || c.Name != "worker-0" || c.RemoteAddr != "10.0.0.5:45678" || !c.Since.Equal(want) || c.MaxSecondsBehind != 1.5 {
				t.Fatalf("connection decoded wrong: %+v", c)
			}
			if len(c.Streams) != 2 || c.Streams[0] != (ConnectionStream{Name: "events", Token: 90, TokensBehind: 10, SecondsBehind: 1.5}) {
				t.Fatalf("streams decoded wrong: %+v", c.Streams)
			}
		})
	}
}

func TestFetchConnectionsErrors(t *testing.T) {
	serve := func(status int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	// A port that was listening and is now closed: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()

	tests := []struct {
		name    string
		url     string
		wantMsg string
	}{
		{"refused", closed, "connection refused"},
		{"404 (not a tcprepl master)", serve(http.StatusNotFound, "no"), "404"},
		{"500", serve(http.StatusInternalServerError, "boom"), "500"},
		{"not JSON", serve(http.StatusOK, "<html>"), "decode connection table"},
		{"object without connections", serve(http.StatusOK, `{"streams": []}`), `no "connections" field`},
		{"bad URL", "http://[::1", "bad HTTP URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fetchConnections(context.Background(), http.DefaultClient, tt.url, "")
			if !errors.Is(err, ErrHTTPUnreachable) {
				t.Fatalf("err = %v, want it to wrap ErrHTTPUnreachable", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestFetchConnectionsBodyLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		big := make([]byte, maxConnectionsBody+10)
		for i := range big {
			big[i] = ' '
		}
		big[0] = '['
		_, _ = w.Write(big)
	}))
	defer srv.Close()
	_, err := fetchConnections(context.Background(), srv.Client(), srv.URL, "")
	if !errors.Is(err, ErrHTTPUnreachable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a body-too-large ErrHTTPUnreachable", err)
	}
}

// TestFetchConnectionsPages follows the master's paging (offset, total).
func TestFetchConnectionsPages(t *testing.T) {
	all := []string{"w0", "tcprepl-probe", "w2", "w3", "w4"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		off := 0
		if o := r.URL.Query().Get("offset"); o != "" {
			if _, err := fmt.Sscan(o, &off); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		end := min(off+2, len(all))
		var items []string
		for i := off; i < end; i++ {
			items = append(items, fmt.Sprintf(`{"id": %d, "name": %q}`, i, all[i]))
		}
		_, _ = fmt.Fprintf(w, `{"total": %d, "offset": %d, "limit": 2, "connections": [%s]}`, len(all), off, strings.Join(items, ","))
	}))
	defer srv.Close()
	conns, err := fetchConnections(context.Background(), srv.Client(), srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range conns {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "w0,w2,w3,w4" {
		t.Fatalf("names = %s, want every page, probe left out", got)
	}
}

func TestFetchConnectionsLeavesOutOwnAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`[{"id": 1, "name": "anon", "remoteAddr": "127.0.0.1:5000"}, {"id": 2, "name": "anon", "remoteAddr": "127.0.0.1:5001"}]`))
	}))
	defer srv.Close()
	conns, err := fetchConnections(context.Background(), srv.Client(), srv.URL, "127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 1 || conns[0].ID != 2 {
		t.Fatalf("conns = %+v, want only id 2 (id 1 is the probe's own, not yet named)", conns)
	}
}

// A table fetched while the probe was still dialing lists the probe's own
// connection unnamed, before its local address was known: the snapshot must
// still leave it out.
func TestSnapshotLeavesOutOwnConnectionFetchedBeforeDialReturned(t *testing.T) {
	p, err := New(Config{Address: "127.0.0.1:1", ServerName: "x", HTTPURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.conns = []Connection{{ID: 1, Name: "anon", RemoteAddr: "127.0.0.1:5000"}, {ID: 2, Name: "worker-0", RemoteAddr: "127.0.0.1:5001"}}
	p.httpFetched = true
	p.localAddr = "127.0.0.1:5000"
	p.mu.Unlock()
	s := p.Snapshot()
	if len(s.Connections) != 1 || s.Connections[0].ID != 2 {
		t.Fatalf("connections = %+v, want only id 2", s.Connections)
	}
}
