package replication

import (
	"context"
	"sync"
)

// byteBudget bounds the bytes that many connections hold at once (catch-up
// pages read but not yet written). A request that finds the budget unused is
// granted whatever its size, so one page larger than the limit still
// progresses.
type byteBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	peak  int64
	freed chan struct{} // closed (and replaced) when bytes are released
}

func newByteBudget(limit int64) *byteBudget {
	return &byteBudget{limit: limit, freed: make(chan struct{})}
}

// acquire waits until n bytes fit (or nothing is in use) and takes them.
func (b *byteBudget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.limit {
			b.takeLocked(n)
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// adjust changes a grant by delta bytes without waiting: a page is granted
// before it is read, at its expected size, then set to its real size.
func (b *byteBudget) adjust(delta int64) {
	if delta > 0 {
		b.mu.Lock()
		b.takeLocked(delta)
		b.mu.Unlock()
		return
	}
	b.release(-delta)
}

func (b *byteBudget) takeLocked(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

func (b *byteBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// inUse returns the bytes granted now and the most ever granted at once.
func (b *byteBudget) inUse() (used, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}
