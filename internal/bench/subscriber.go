package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// subscriber counts the rows one subscription receives and, while record is
// set, publish-to-deliver latency from each batch's timestamp. A wire
// subscriber or a replication.Client feeds it.
type subscriber struct {
	cancel  context.CancelFunc
	done    chan error
	rows    atomic.Int64
	lastTok atomic.Int64
	caught  atomic.Bool
	lastAt  atomic.Int64 // unix ns of the last delivery
	firstAt atomic.Int64
	record  atomic.Bool
	mu      sync.Mutex
	latency []time.Duration
	// failed holds why the subscription failed first; nil while it works.
	failed atomic.Pointer[error]
}

func (t *target) subscribe(ctx context.Context, name string, from int64, now bool) (*subscriber, error) {
	s := &subscriber{done: make(chan error, 1)}
	if t.cfg.SubscriberKind == WireSubscribers {
		if err := t.subscribeWire(ctx, s, name, from, now); err != nil {
			return nil, err
		}
		return s, nil
	}
	c, err := replication.NewClient(replication.ClientConfig{
		Address: t.addr, ServerName: t.cfg.ServerName, Name: name,
		Streams: []replication.StreamRequest{{Stream: Stream, Token: from, Now: now}},
		Handler: clientHandler{s},
		// The benchmark's subscribers must not be dropped as slow consumers
		// by their own queue; the server's limit is what is under test.
		MaxPendingCommands: 1 << 20,
	})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go func() { s.done <- c.Run(cctx) }()
	return s, nil
}

func (s *subscriber) stop() {
	s.cancel()
	// Run returns the cancelled context's error; anything else is a failure.
	if err := <-s.done; err != nil && !errors.Is(err, context.Canceled) {
		s.fail(err)
	}
}

func (s *subscriber) fail(err error) {
	s.failed.CompareAndSwap(nil, &err)
}

// delivered records a complete update: its token, its row count and its
// last row, whose last field is the publish time in nanoseconds.
func (s *subscriber) delivered(token, rows int64, lastRow []byte) {
	now := time.Now().UnixNano()
	s.firstAt.CompareAndSwap(0, now)
	s.rows.Add(rows)
	s.lastTok.Store(token)
	s.lastAt.Store(now)
	if s.record.Load() && rows > 0 {
		// One sample per batch: its rows share one publish time.
		if i := bytes.LastIndexByte(lastRow, ' '); i >= 0 && len(lastRow) > i+2 {
			if ts, err := strconv.ParseInt(string(lastRow[i+1:len(lastRow)-1]), 10, 64); err == nil {
				s.mu.Lock()
				s.latency = append(s.latency, time.Duration(now-ts))
				s.mu.Unlock()
			}
		}
	}
}

// position records a POSITION: the subscription is live from here.
func (s *subscriber) position(token int64) {
	if token > s.lastTok.Load() {
		s.lastTok.Store(token)
	}
	s.caught.Store(true)
}

// clientHandler adapts a subscriber to replication.Handler.
type clientHandler struct{ s *subscriber }

func (h clientHandler) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	var last []byte
	if len(rows) > 0 {
		last = rows[len(rows)-1]
	}
	h.s.delivered(token, int64(len(rows)), last)
	return nil
}

func (clientHandler) HandlePosition(string, int64) {}

func (h clientHandler) HandleConnectionState(st replication.ClientState, err error) {
	switch st {
	case replication.ClientCaughtUp:
		h.s.caught.Store(true)
	case replication.ClientDisconnected:
		if err != nil && !errors.Is(err, context.Canceled) {
			h.s.fail(err)
		}
	}
}

// waitAll polls until every subscriber satisfies cond, or the timeout.
func waitAll(ctx context.Context, subs []*subscriber, timeout time.Duration, what string, cond func(*subscriber) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, s := range subs {
			if p := s.failed.Load(); p != nil {
				return fmt.Errorf("%s: a subscriber failed: %w", what, *p)
			}
			ok = ok && cond(s)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: timed out after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
