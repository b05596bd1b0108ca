// Package logmem holds what both stream logs (Pebble and PostgreSQL) keep in
// memory: the tail of recent updates and the recent append rate.
package logmem

import (
	"sync"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// Tail keeps a stream's most recent durable updates in memory, as the
// appends produced them. Workers catching up after a short disconnect, or
// many workers catching up at once, read these without touching the store and
// without copying rows: a page from the cache shares the immutable row
// bytes. All streams share one byte budget (the log's cache budget); a stream that
// goes over it evicts its own oldest updates, so busy streams recycle their
// space and quiet ones keep their tail.
type Tail struct {
	mu    sync.RWMutex
	ups   []replication.Update // ups[head:] hold consecutive tokens, oldest first
	head  int
	bytes int64
}

// updateCost approximates an update's memory: row bytes, row slice headers
// and the Update itself.
func updateCost(u *replication.Update) int64 {
	n := int64(64 + 24*len(u.Rows))
	for _, r := range u.Rows {
		n += int64(len(r))
	}
	return n
}

// Add appends u, which must follow the newest cached token (a gap, which
// only a failed round could cause, restarts the cache). It returns the
// change in accounted bytes.
func (c *Tail) Add(u replication.Update) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := int64(0)
	if n := len(c.ups); n > c.head && c.ups[n-1].Token+1 != u.Token {
		delta -= c.bytes
		clear(c.ups)
		c.ups, c.head, c.bytes = c.ups[:0], 0, 0
	}
	cost := updateCost(&u)
	c.ups = append(c.ups, u)
	c.bytes += cost
	return delta + cost
}

// EvictOldest drops the oldest update, keeping the newest; it returns the
// bytes freed (0 when only one is left).
func (c *Tail) EvictOldest() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ups)-c.head <= 1 {
		return 0
	}
	return c.dropLocked(1)
}

// DropThrough drops the cached updates with token <= through (retention)
// and returns the bytes freed.
func (c *Tail) DropThrough(through int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.ups) - c.head
	if n == 0 || c.ups[c.head].Token > through {
		return 0
	}
	return c.dropLocked(int(min(through-c.ups[c.head].Token+1, int64(n))))
}

func (c *Tail) dropLocked(k int) int64 {
	freed := int64(0)
	for i := c.head; i < c.head+k; i++ {
		freed += updateCost(&c.ups[i])
		c.ups[i] = replication.Update{}
	}
	c.head += k
	c.bytes -= freed
	// Reclaim the front of the slice once it is half dead, so the slice
	// does not grow without bound; readers hold copies, not indexes.
	if c.head > 1024 && c.head > len(c.ups)/2 {
		n := copy(c.ups, c.ups[c.head:])
		clear(c.ups[n:])
		c.ups, c.head = c.ups[:n], 0
	}
	return freed
}

// Read serves ReadAfter from the cache when it holds the whole page: the
// token after `after` is cached, and the page ends at limit rows or at upTo
// within the cache. ok is false otherwise; the caller then reads the store.
func (c *Tail) Read(after, upTo int64, limit int) (out []replication.Update, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	live := c.ups[c.head:]
	if len(live) == 0 {
		return nil, false
	}
	first := live[0].Token
	if after+1 < first || after+1 > live[len(live)-1].Token {
		return nil, false
	}
	i := int(after + 1 - first)
	rows := 0
	end := i
	for end < len(live) && live[end].Token <= upTo && rows < limit {
		rows += len(live[end].Rows)
		end++
	}
	if rows < limit && (end == len(live)) && live[end-1].Token < upTo {
		return nil, false // the page would continue past the cache
	}
	out = make([]replication.Update, end-i)
	copy(out, live[i:end])
	return out, true
}

// TokenTime returns a cached token's publish time.
func (c *Tail) TokenTime(token int64) (time.Time, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	live := c.ups[c.head:]
	if len(live) == 0 || token < live[0].Token || token > live[len(live)-1].Token {
		return time.Time{}, false
	}
	return live[token-live[0].Token].Time, true
}

// Bytes is the memory the cache accounts for.
func (c *Tail) Bytes() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}
