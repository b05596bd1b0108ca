package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// newLogMaster builds a master over the real (ephemeral) stream log and a
// fakeServer, to test what the master and the log do together.
func newLogMaster(t *testing.T, cfg masterapi.Config) (*Master, *fakeServer) {
	t.Helper()
	cfg.Ephemeral = true
	if cfg.ServerName == "" {
		cfg.ServerName = "test.example"
	}
	srv := &fakeServer{done: make(chan struct{})}
	m, err := New(cfg, Options{
		Logger:   logr.Discard(),
		Validate: acceptAll,
		NewServer: func(masterapi.Config, replication.Source, *Effects, prometheus.Registerer, logr.Logger) (ReplicationServer, error) {
			return srv, nil
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	return m, srv
}

func TestPublishNeedsJSONContentType(t *testing.T) {
	tests := map[string]struct {
		contentType string
		code        int
	}{
		"none":              {"", 415},
		"form (cross-site)": {"application/x-www-form-urlencoded", 415},
		"multipart form":    {"multipart/form-data; boundary=x", 415},
		"plain text":        {"text/plain", 415},
		"JSON-ish":          {"application/jsonx", 415},
		"malformed":         {"application/json; =", 415},
		"JSON":              {"application/json", 200},
		"JSON with charset": {"application/json; charset=utf-8", 200},
		"JSON in capitals":  {"Application/JSON", 200},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, log, _, _ := newFakeMaster(t, masterapi.Config{})
			req := httptest.NewRequest("POST", "/v1/streams/caches/rows", strings.NewReader(`{"rows": [["a"]]}`))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("Content-Type %q: %d %s, want %d", tc.contentType, rec.Code, rec.Body, tc.code)
			}
			if tc.code == 415 {
				if !strings.Contains(rec.Body.String(), "needs Content-Type: application/json") {
					t.Fatalf("415 does not say what to send: %s", rec.Body)
				}
				if rows := log.rows("caches"); len(rows) != 0 {
					t.Fatalf("stored %v from a %q body", rows, tc.contentType)
				}
			}
		})
	}
}

func TestPublishRowLimit(t *testing.T) {
	tests := map[string]struct {
		maxPending int
		limit      int
	}{
		"default queue limit": {0, masterapi.MaxRowsPerPublish},
		"small queue limit":   {500, 50},
		"tiny queue limit":    {5, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, log, _, _ := newFakeMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxPendingCommands: tc.maxPending}})
			if m.MaxRows() != tc.limit {
				t.Fatalf("MaxRows = %d, want %d", m.MaxRows(), tc.limit)
			}
			body := func(n int) string {
				return `{"rows": [` + strings.TrimSuffix(strings.Repeat(`["r"], `, n), ", ") + `]}`
			}
			if code, reply, _ := do(t, m.Handler(), "POST", "/v1/streams/caches/rows", body(tc.limit)); code != 200 {
				t.Fatalf("%d rows (the limit): %d %v", tc.limit, code, reply)
			}
			code, reply, _ := do(t, m.Handler(), "POST", "/v1/streams/caches/rows", body(tc.limit+1))
			msg, _ := reply["error"].(string)
			if code != 413 || !strings.Contains(msg, fmt.Sprintf("the limit is %d rows per publish", tc.limit)) || !strings.Contains(msg, "split them") {
				t.Fatalf("%d rows: %d %q, want 413 naming the limit", tc.limit+1, code, msg)
			}
			rows := make([]json.RawMessage, tc.limit+1)
			for i := range rows {
				rows[i] = json.RawMessage(`["r"]`)
			}
			if _, err := m.Publish(t.Context(), "caches", rows); !errors.Is(err, ErrTooManyRows) {
				t.Fatalf("Publish of %d rows: %v, want ErrTooManyRows", len(rows), err)
			}
			if n := len(log.rows("caches")); n != tc.limit {
				t.Fatalf("%d rows stored, want only the %d of the batch within the limit", n, tc.limit)
			}
		})
	}
}

// TestPublishBodyGrowsAsBytesArrive: a request that declares a huge body
// and sends a small one costs memory for what it sent, not for what it
// declared (300 such requests once took 2 GiB).
func TestPublishBodyGrowsAsBytesArrive(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxRequestBytes: masterapi.MaxRequestBytesLimit}})
	h := m.Handler()
	const declared = 200 << 20
	req := httptest.NewRequest("POST", "/v1/streams/caches/rows", strings.NewReader(`{"rows": [["a"]]}`))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = declared
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	if rec.Code != 200 {
		t.Fatalf("publish: %d %s", rec.Code, rec.Body)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > declared/16 {
		t.Fatalf("a 17-byte body declared as %d bytes allocated %d bytes", declared, allocated)
	}
}

func TestReadBody(t *testing.T) {
	tests := map[string]struct {
		body          string
		contentLength int64
		maxCap        int
	}{
		// Allocations round up to Go's size classes, hence the slack.
		"unknown length":       {strings.Repeat("x", 5000), -1, 16 << 10},
		"exact length":         {strings.Repeat("x", 5000), 5000, 8 << 10},
		"length too small":     {strings.Repeat("x", 5000), 10, 16 << 10},
		"length far too large": {"short", 1 << 40, 2 * bodyPresize},
		"empty":                {"", 0, 1024},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := readBody(nil, strings.NewReader(tc.body), tc.contentLength)
			if err != nil || string(got) != tc.body {
				t.Fatalf("readBody = %d bytes, %v; want the %d bytes sent", len(got), err, len(tc.body))
			}
			if cap(got) > tc.maxCap {
				t.Fatalf("buffer grew to %d bytes for %d sent, want at most %d", cap(got), len(tc.body), tc.maxCap)
			}
		})
	}
}

// TestPublishCancelledRequest: a publish whose client went away before the
// append was queued gets 503 and stores nothing.
func TestPublishCancelledRequest(t *testing.T) {
	m, srv := newLogMaster(t, masterapi.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/streams/caches/rows", strings.NewReader(`{"rows": [["a"]]}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, req)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "publish did not complete") || !strings.Contains(rec.Body.String(), "context canceled") {
		t.Fatalf("cancelled publish: %d %s, want 503 saying it did not complete", rec.Code, rec.Body)
	}
	if cur, _ := m.store.CurrentToken("caches"); cur != 0 {
		t.Fatalf("cancelled publish stored token %d", cur)
	}
	if got := srv.tokens("caches"); len(got) != 0 {
		t.Fatalf("cancelled publish reached the server: %v", got)
	}
}

// TestConcurrentPublishOrderRealLog: many publishers on two streams over
// the real log, whose group commits make Appends return in any order; the
// server gets every token once, in order, from the log's hand-off.
func TestConcurrentPublishOrderRealLog(t *testing.T) {
	m, srv := newLogMaster(t, masterapi.Config{})
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			stream := []string{"caches", "typing"}[p%2]
			for range 100 {
				if _, err := m.Publish(context.Background(), stream, []json.RawMessage{json.RawMessage(`["a"]`)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, stream := range []string{"caches", "typing"} {
		got := srv.tokens(stream)
		if len(got) != 400 {
			t.Fatalf("%s: %d tokens published, want 400", stream, len(got))
		}
		for i, tok := range got {
			if tok != int64(i+1) {
				t.Fatalf("%s: token %d at position %d", stream, tok, i)
			}
		}
	}
}

// TestPublishErrorSaysStreamOnce: a failed append names the stream once,
// not once per layer.
func TestPublishErrorSaysStreamOnce(t *testing.T) {
	m, _ := newLogMaster(t, masterapi.Config{})
	if err := m.store.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := m.Publish(context.Background(), "caches", []json.RawMessage{json.RawMessage(`["a"]`)})
	if err == nil || strings.Count(err.Error(), "caches") != 1 {
		t.Fatalf("err %v, want the stream named once", err)
	}
}
