package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// memLog is an in-memory StreamLog for unit tests of the master's own logic.
type memLog struct {
	mu      sync.Mutex
	now     func() time.Time
	streams []string
	updates map[string][]replication.Update
	current map[string]int64
	// failNext makes the next Append fail (after consuming a token when
	// burnToken is set), to test the publish error paths.
	failNext  error
	burnToken bool
	closed    bool
	trims     []int64
	// durable is the OnDurable hand-off, called in token order under mu
	// as the real log calls it from its sync loop.
	durable func(replication.Update)
}

func (l *memLog) OnDurable(h func(replication.Update)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.durable = h
}

func newMemLog(streams []string, now func() time.Time) *memLog {
	return &memLog{now: now, streams: streams, updates: map[string][]replication.Update{}, current: map[string]int64{}}
}

func (l *memLog) Streams() []string { return l.streams }

func (l *memLog) CurrentToken(stream string) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.streams, stream) {
		return 0, fmt.Errorf("%s: %w", stream, replication.ErrUnknownStream)
	}
	return l.current[stream], nil
}

func (l *memLog) ReadAfter(_ context.Context, stream string, after, upTo int64, limit int) ([]replication.Update, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []replication.Update
	n := 0
	for _, u := range l.updates[stream] {
		if u.Token > after && u.Token <= upTo && n < limit {
			out = append(out, u)
			n += len(u.Rows)
		}
	}
	return out, nil
}

func (l *memLog) AppendEncoded(_ context.Context, stream string, rows []json.RawMessage) (replication.Update, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return replication.Update{}, errors.New("log closed")
	}
	if !slices.Contains(l.streams, stream) {
		return replication.Update{}, fmt.Errorf("%s: %w", stream, replication.ErrUnknownStream)
	}
	if err := l.failNext; err != nil {
		l.failNext = nil
		if l.burnToken {
			l.current[stream]++
		}
		return replication.Update{}, err
	}
	l.current[stream]++
	// Like the real log, keep a copy: the caller may reuse its buffers
	// (the HTTP handler pools them).
	own := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		own[i] = slices.Clone(r)
	}
	u := replication.Update{Stream: stream, Token: l.current[stream], Rows: own, Time: l.now()}
	l.updates[stream] = append(l.updates[stream], u)
	if l.durable != nil {
		l.durable(u)
	}
	return u, nil
}

func (l *memLog) Trim(stream string, upTo int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trims = append(l.trims, upTo)
	kept := l.updates[stream][:0]
	for _, u := range l.updates[stream] {
		if u.Token > upTo {
			kept = append(kept, u)
		}
	}
	l.updates[stream] = kept
	return nil
}

func (l *memLog) Stats(stream string) (streamlog.StreamStats, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	oldest := l.current[stream] + 1
	if len(l.updates[stream]) > 0 {
		oldest = l.updates[stream][0].Token
	}
	var rows int64
	for _, u := range l.updates[stream] {
		rows += int64(len(u.Rows))
	}
	return streamlog.StreamStats{Stream: stream, CurrentToken: l.current[stream], OldestToken: oldest, Rows: rows, RowsPerSecond: float64(len(l.updates[stream]))}, nil
}

func (l *memLog) TokenTime(stream string, token int64) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ups := l.updates[stream]
	for _, u := range ups {
		if u.Token == token {
			return u.Time, nil
		}
	}
	if len(ups) > 0 && token < ups[0].Token {
		return time.Time{}, &replication.TokenTooOldError{Stream: stream, Token: token, Oldest: ups[0].Token}
	}
	return time.Time{}, fmt.Errorf("token %d not held", token)
}

func (l *memLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return nil
}

func (l *memLog) rows(stream string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, u := range l.updates[stream] {
		for _, r := range u.Rows {
			out = append(out, string(r))
		}
	}
	return out
}

// fakeServer records what the master publishes.
type fakeServer struct {
	mu        sync.Mutex
	published []replication.Update
	conns     []ConnInfo
	ln        net.Listener
	done      chan struct{}
	once      sync.Once
}

func (s *fakeServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	<-s.done
	return errServerClosed
}

func (s *fakeServer) Publish(u replication.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.published = append(s.published, u)
}

func (s *fakeServer) Connections() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.conns)
}

func (s *fakeServer) Shutdown(context.Context) error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *fakeServer) tokens(stream string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, u := range s.published {
		if u.Stream == stream {
			out = append(out, u.Token)
		}
	}
	return out
}

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// acceptAll accepts any row that is a JSON array, so the master's own
// logic is tested apart from the real row catalogue.
func acceptAll(_ string, row json.RawMessage, _ [][]byte) error {
	var a []json.RawMessage
	if err := json.Unmarshal(row, &a); err != nil {
		return fmt.Errorf("row must be a JSON array: %w", err)
	}
	return nil
}

// newFakeMaster builds a master over memLog and fakeServer.
func newFakeMaster(t testing.TB, cfg masterapi.Config) (*Master, *memLog, *fakeServer, *testClock) {
	clock := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if cfg.ServerName == "" {
		cfg.ServerName = "test.example"
	}
	log := newMemLog(cfg.Streams(), clock.Now)
	srv := &fakeServer{done: make(chan struct{})}
	m, err := New(cfg, Options{
		Logger:   logr.Discard(),
		Now:      clock.Now,
		Log:      log,
		Validate: acceptAll,
		NewServer: func(masterapi.Config, replication.Source, *Effects, prometheus.Registerer, logr.Logger) (ReplicationServer, error) {
			return srv, nil
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	return m, log, srv, clock
}
