package replication

import "time"

// outItem is a run of complete lines (each ending in "\n") of one command
// name, queued for writing. b may be shared with other connections and is
// never modified.
//
// Items are copied in and out of the queue once per delivery, so they are
// kept small (32 bytes): the page an item holds is found by its bytes, not
// by a pointer in every item.
type outItem struct {
	b   []byte
	n   int32     // commands in b
	cmd commandID // the lines' command
	// paged: b is a catch-up page's bytes, holding a reference to the
	// page (found by b, see pageCache.releaseData) until it has been
	// written or dropped.
	paged bool
}

// queueLimits are the slow-consumer limits of a connection's queue.
type queueLimits struct {
	cmds  int
	bytes int
}

// outQueue is a connection's outbound state: the items waiting for the
// writer and the batch it is writing (in flight). The connection's mutex
// guards it; it has no lock of its own.
type outQueue struct {
	// pages holds the catch-up pages queued here (the server's, shared by
	// all its connections); nil on a client, which sends no pages.
	pages       *pageCache
	items       []outItem
	queuedCmds  int
	queuedBytes int
	flightCmds  int
	flightBytes int
	flightSince time.Time // zero when no write is in progress
	// peakQueuedBytes is the most bytes ever waiting behind the flight:
	// the byte limit bounds it, plus the item at the head.
	peakQueuedBytes int
}

func (q *outQueue) push(it outItem) {
	q.items = append(q.items, it)
	q.queuedCmds += int(it.n)
	q.queuedBytes += len(it.b)
	q.peakQueuedBytes = max(q.peakQueuedBytes, q.queuedBytes)
}

// admits reports whether a live item may join the queue. What counts is
// what waits behind the next write, plus the item: a peer that keeps up has
// at most one batch in flight and one at the head of the queue, whatever
// their size, and little or nothing behind them. So an item that finds the
// queue empty is always taken, and one big batch never drops a subscriber
// that is keeping up, nor the rows published after it.
func (q *outQueue) admits(it outItem, lim queueLimits) bool {
	if len(q.items) == 0 {
		return true
	}
	head := &q.items[0]
	return q.queuedCmds-int(head.n)+int(it.n) <= lim.cmds && q.queuedBytes-len(head.b)+len(it.b) <= lim.bytes
}

// hasRoomForCatchUp reports whether a catch-up page may be read: catch-up
// fills at most half of each limit (queued and in flight together), leaving
// the other half for live rows, so catching up never makes a connection a
// slow consumer.
func (q *outQueue) hasRoomForCatchUp(lim queueLimits) bool {
	cmds, bytes := q.pending()
	return cmds == 0 || (cmds <= lim.cmds/2 && bytes <= lim.bytes/2)
}

// pending is everything not yet accepted by the socket: queued and in flight.
func (q *outQueue) pending() (cmds, bytes int) {
	return q.queuedCmds + q.flightCmds, q.queuedBytes + q.flightBytes
}

// take moves up to maxBytes of the queue (at least one item) to dst, as the
// batch in flight since now.
func (q *outQueue) take(dst []outItem, maxBytes int, now time.Time) []outItem {
	n, nbytes, cmds := 0, 0, 0
	for n < len(q.items) && (n == 0 || nbytes+len(q.items[n].b) <= maxBytes) {
		nbytes += len(q.items[n].b)
		cmds += int(q.items[n].n)
		n++
	}
	if n == 0 {
		return dst
	}
	dst = append(dst, q.items[:n]...)
	rest := copy(q.items, q.items[n:])
	clear(q.items[rest:])
	q.items = q.items[:rest]
	q.queuedCmds -= cmds
	q.queuedBytes -= nbytes
	q.flightCmds, q.flightBytes = cmds, nbytes
	q.flightSince = now
	return dst
}

// written ends the flight.
func (q *outQueue) written() {
	q.flightCmds, q.flightBytes = 0, 0
	q.flightSince = time.Time{}
}

// release gives back the pages written or dropped items held.
func (q *outQueue) release(items []outItem) {
	for i := range items {
		if items[i].paged {
			q.pages.releaseData(items[i].b)
			items[i].paged = false
		}
	}
}

// dropQueued discards what waits behind the flight, releasing what it holds.
func (q *outQueue) dropQueued() {
	q.release(q.items)
	clear(q.items)
	q.items = q.items[:0]
	q.queuedCmds, q.queuedBytes = 0, 0
}

// flushingFor is how long the write in progress has taken, 0 when none.
func (q *outQueue) flushingFor(now time.Time) time.Duration {
	if q.flightSince.IsZero() {
		return 0
	}
	return now.Sub(q.flightSince)
}
