package streamlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// recorder is a replication client handler that keeps what it receives.
type recorder struct {
	mu      sync.Mutex
	tokens  []int64
	rows    []string
	lastPos int64
}

func (r *recorder) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens, token)
	for _, row := range rows {
		r.rows = append(r.rows, string(row))
	}
	return nil
}

func (r *recorder) HandlePosition(_ string, token int64) {
	r.mu.Lock()
	r.lastPos = token
	r.mu.Unlock()
}

func (r *recorder) HandleConnectionState(replication.ClientState, error) {}

func (r *recorder) snapshot() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tokens) == 0 {
		return 0, 0
	}
	return len(r.rows), r.tokens[len(r.tokens)-1]
}

// TestServesTheReplicationServer runs the real protocol server on the log
// over TCP: a worker far behind catches up through paged reads while rows
// keep being appended and published, and receives every row once, in order,
// in its batches, with the tokens the log gave them.
func TestServesTheReplicationServer(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end over TCP")
	}
	l := openTest(t, Options{Dir: t.TempDir(), Streams: []string{"caches", "events"}})
	defer closeTest(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const before, during, batch = 20_000, 5_000, 10
	n := 0
	appendBatch := func() replication.Update {
		rows := make([]json.RawMessage, batch)
		for i := range rows {
			n++
			rows[i] = json.RawMessage(fmt.Sprintf(`["f",[%d],1]`, n))
		}
		u, err := l.Append(ctx, "caches", rows)
		if err != nil {
			t.Error(err)
		}
		return u
	}
	for range before / batch {
		appendBatch()
	}

	srv, err := replication.NewServer(replication.ServerConfig{ServerName: "test", CatchUpPageRows: 1000}, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()

	rec := &recorder{}
	cl, err := replication.NewClient(replication.ClientConfig{
		Address: ln.Addr().String(), ServerName: "test", Name: "catch-up-test",
		Streams: []replication.StreamRequest{{Stream: "caches", Token: 0}},
		Handler: rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	clientDone := make(chan error, 1)
	go func() { clientDone <- cl.Run(ctx) }()

	// Publish live while the client catches up: Publish after Append, as
	// the master does.
	for range during / batch {
		srv.Publish(appendBatch())
	}
	final, _ := l.CurrentToken("caches")
	deadline := time.Now().Add(60 * time.Second)
	for {
		rows, last := rec.snapshot()
		if last == final && rows == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client has %d rows through token %d, want %d through %d", rows, last, n, final)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-clientDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, tok := range rec.tokens {
		if tok != int64(i+1) {
			t.Fatalf("update %d has token %d", i, tok)
		}
	}
	for i, row := range rec.rows {
		// Stored and sent in Python's json.dumps form.
		if want := fmt.Sprintf(`["f", [%d], 1]`, i+1); row != want {
			t.Fatalf("row %d = %s, want %s", i, row, want)
		}
	}
}
