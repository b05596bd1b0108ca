package replication

import (
	"sort"
	"sync"
	"time"
)

// Clock is the time source of keep-alive and timestamps. Tests inject a
// ManualClock so that keep-alive rules are checked without sleeping.
type Clock interface {
	Now() time.Time
	// NewTicker returns a ticker that fires every d.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of time.Ticker the protocol uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

func clockOrReal(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

// ManualClock is a Clock that only moves when Advance is called. Its tickers
// fire (without blocking, dropping a tick the receiver has not taken, as
// time.Ticker does) each time Advance crosses their next deadline.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers map[*manualTicker]struct{}
}

// NewManualClock returns a ManualClock reading start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, tickers: make(map[*manualTicker]struct{})}
}

// Now implements Clock.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTicker implements Clock.
func (c *ManualClock) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		d = time.Millisecond // as time.NewTicker would panic; keep tests alive instead
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTicker{clock: c, every: d, next: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.tickers[t] = struct{}{}
	return t
}

// Tickers returns how many tickers are running; tests wait for it to know a
// connection's keep-alive loop has started before advancing the clock.
func (c *ManualClock) Tickers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tickers)
}

// TicksWaiting returns how many tickers hold a tick their receiver has not
// taken yet; a test waits for 0 before the next Advance, so that no tick is
// dropped.
func (c *ManualClock) TicksWaiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for t := range c.tickers {
		n += len(t.ch)
	}
	return n
}

// Advance moves the clock forward by d and fires every ticker whose deadline
// has passed, in deadline order.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []*manualTicker
	for t := range c.tickers {
		if !t.next.After(now) {
			due = append(due, t)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].next.Before(due[j].next) })
	for _, t := range due {
		for !t.next.After(now) {
			t.next = t.next.Add(t.every)
		}
		select {
		case t.ch <- now:
		default:
		}
	}
	c.mu.Unlock()
}

type manualTicker struct {
	clock *ManualClock
	every time.Duration
	next  time.Time
	ch    chan time.Time
}

func (t *manualTicker) C() <-chan time.Time { return t.ch }

func (t *manualTicker) Stop() {
	t.clock.mu.Lock()
	delete(t.clock.tickers, t)
	t.clock.mu.Unlock()
}
