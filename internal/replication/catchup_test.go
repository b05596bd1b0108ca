package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syntheticSource serves one stream whose row for token t is cacheRow(t),
// generated on read, so a test can be millions of rows behind without
// holding them.
type syntheticSource struct {
	stream  string
	current atomic.Int64
}

func (s *syntheticSource) Streams() []string { return []string{s.stream} }

func (s *syntheticSource) CurrentToken(stream string) (int64, error) {
	if stream != s.stream {
		return 0, fmt.Errorf("stream %q: %w", stream, ErrUnknownStream)
	}
	return s.current.Load(), nil
}

func (s *syntheticSource) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]Update, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Update
	for t := after + 1; t <= upTo && len(out) < limit; t++ {
		out = append(out, Update{Stream: stream, Token: t, Rows: []json.RawMessage{cacheRow(int(t))}})
	}
	return out, nil
}

// nextToken makes the next token visible and returns its update, without a
// row (the benchmark sets its own).
func (s *syntheticSource) nextToken() Update {
	return Update{Stream: s.stream, Token: s.current.Add(1)}
}

// append makes the next token visible and returns its update.
func (s *syntheticSource) append() Update {
	t := s.current.Add(1)
	return Update{Stream: s.stream, Token: t, Rows: []json.RawMessage{cacheRow(int(t))}}
}

// sequenceHandler checks that rows arrive with tokens 1, 2, 3, ... each once.
type sequenceHandler struct {
	mu       sync.Mutex
	next     int64
	err      error
	caughtUp int
}

func (h *sequenceHandler) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil && (token != h.next+1 || len(rows) != 1 || string(rows[0]) != string(cacheRow(int(token)))) {
		h.err = fmt.Errorf("got token %d after %d", token, h.next)
	}
	h.next = token
	return nil
}
func (h *sequenceHandler) HandlePosition(string, int64) {}
func (h *sequenceHandler) HandleConnectionState(s ClientState, _ error) {
	if s == ClientCaughtUp {
		h.mu.Lock()
		h.caughtUp++
		h.mu.Unlock()
	}
}
func (h *sequenceHandler) state() (int64, int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.next, h.caughtUp, h.err
}

// TestCatchUpMillionRowsBehind: a worker 1,000,000 rows behind (100,000
// under -race or -short) catches up through paged reads while publishing
// goes on, and ends with every row once, in order, with no gap; the 2020
// master refused anything over 10,000.
func TestCatchUpMillionRowsBehind(t *testing.T) {
	behind := int64(1_000_000)
	if raceEnabled || testing.Short() {
		behind = 100_000
	}
	src := &syntheticSource{stream: "caches"}
	src.current.Store(behind)
	srv, addr := startServer(t, ServerConfig{}, src, nil)
	h := &sequenceHandler{}
	runClient(t, ClientConfig{Address: addr, Handler: h, Streams: []StreamRequest{{Stream: "caches", Token: 0}}})

	stop := make(chan struct{})
	published := make(chan int64, 1)
	go func() {
		// Live rows keep coming during the catch-up (20 a tick).
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				published <- src.current.Load()
				return
			case <-tick.C:
				for i := 0; i < 20; i++ {
					srv.Publish(src.append())
				}
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		next, caughtUp, err := h.state()
		if err != nil {
			close(stop)
			t.Fatal(err)
		}
		if next >= behind && caughtUp > 0 {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("only at token %d of %d after 5 minutes", next, behind)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	last := <-published
	waitFor(t, "live rows", func() bool { next, _, _ := h.state(); return next == last })
	if _, caughtUp, err := h.state(); err != nil || caughtUp != 1 {
		t.Fatalf("err %v, caught up %d times (a reconnect happened)", err, caughtUp)
	}
	t.Logf("caught up %d rows behind; %d live rows published meanwhile", behind, last-behind)
}
