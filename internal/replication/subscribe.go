package replication

import (
	"context"
	"errors"
)

// subState is where a subscription is in docs/protocol.md's "Subscribing".
type subState int

const (
	// subCatchingUp: far behind, reading pages from the Source. Live rows
	// are not kept: the Source will return them.
	subCatchingUp subState = iota
	// subConnecting: near the head. Live rows are queued on the
	// subscription (step 1) until POSITION has been sent.
	subConnecting
	// subLive: rows go out as they are published (step 5).
	subLive
)

// pendingUpdate is a live update kept while a subscription is connecting.
type pendingUpdate struct {
	token int64
	item  outItem
}

// subscription is one stream replicated by one connection. Its fields are
// guarded by the connection's mutex.
type subscription struct {
	stream       string
	state        subState
	pending      []pendingUpdate
	pendingCmds  int
	pendingBytes int
	lastToken    int64
	// pageRows is how many rows the next catch-up page asks for: pages aim
	// at a size in bytes, so they hold fewer rows when rows are large.
	pageRows int
	cancel   context.CancelFunc
	done     chan struct{} // closed when its goroutine has finished
}

// startReplicate handles REPLICATE on the read loop. It installs the new
// subscriptions at once, in the order received (so a later REPLICATE of a
// stream replaces an earlier one), and catches them up on a goroutine, so
// that a long catch-up never stops the connection reading (and answering
// keep-alive).
func (sc *ServerConn) startReplicate(cmd ReplicateCommand, streams []string) {
	type started struct {
		sub  *subscription
		prev *subscription
		ctx  context.Context
	}
	subs := make([]started, 0, len(streams))
	for _, stream := range streams {
		ctx, cancel := context.WithCancel(sc.ctx)
		sub := &subscription{stream: stream, state: subCatchingUp, lastToken: cmd.Token, cancel: cancel, done: make(chan struct{})}
		sc.c.mu.Lock()
		slot := sc.slots[stream]
		if slot == nil {
			slot = &streamSlot{sc: sc}
			sc.slots[stream] = slot
		}
		prev := slot.sub
		slot.sub = sub
		sc.c.mu.Unlock()
		if prev != nil {
			prev.cancel()
		}
		sc.s.addFanout(stream, slot)
		subs = append(subs, started{sub, prev, ctx})
	}
	sc.subWG.Add(1)
	go func() {
		defer sc.subWG.Done()
		var failed error
		for _, st := range subs {
			if failed == nil {
				if st.prev != nil {
					<-st.prev.done
				}
				failed = sc.subscribe(st.ctx, st.sub, cmd.Token, cmd.Now)
			}
			st.sub.cancel()
			close(st.sub.done)
		}
		if failed != nil && sc.ctx.Err() == nil && !errors.Is(failed, errConnClosed) && !errors.Is(failed, context.Canceled) {
			sc.s.log.Info("replication subscription failed", "conn", sc.ID(), "name", sc.Name(), "request", cmd.Stream, "error", failed.Error())
			sc.c.closeWith(CloseSubscribeError, "failed to handle replicate: "+failed.Error(), false, failed)
		}
	}()
}

// subscribe runs docs/protocol.md's subscription algorithm for one stream, with
// one extension: a subscriber far behind is first caught up page by page
// from the Source, with back-pressure, and only the last stretch near the
// head uses the queue-while-connecting step. So any distance can be caught
// up while publishing goes on, each row once, in order.
func (sc *ServerConn) subscribe(ctx context.Context, sub *subscription, from int64, now bool) error {
	src := sc.s.src
	last := from
	if !now {
		// Chase the moving head without queuing live rows.
		for first := true; ; first = false {
			head, err := src.CurrentToken(sub.stream)
			if err != nil {
				return err
			}
			if first && from > head {
				return &TokenAheadError{Stream: sub.stream, Token: from, Current: head}
			}
			if last >= head {
				break
			}
			reached, err := sc.sendPage(ctx, sub, &last, head)
			if err != nil {
				return err
			}
			if reached {
				break
			}
		}
	}

	// Step 1: from here live rows are queued on the subscription.
	if !sc.setState(sub, subConnecting) {
		return nil // replaced by a newer REPLICATE of the stream
	}
	// Step 2: the rows up to the current token.
	head, err := src.CurrentToken(sub.stream)
	if err != nil {
		return err
	}
	if now {
		last = head
	}
	for last < head {
		reached, err := sc.sendPage(ctx, sub, &last, head)
		if err != nil {
			return err
		}
		if reached {
			break
		}
	}

	// Steps 3 to 5 in one critical section, so no live row slips between.
	c := sc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc.current(sub) != sub || c.closing {
		return nil
	}
	line, err := c.encodeLine(PositionCommand{Stream: sub.stream, Token: head})
	if err != nil {
		return err
	}
	c.pushLocked(outItem{b: line, n: 1, cmd: idPosition})
	sub.lastToken = head
	for _, p := range sub.pending {
		// A batch is one update and counts by its final token.
		if p.token > head {
			c.pushLocked(p.item)
			sub.lastToken = p.token
		}
	}
	sub.pending, sub.pendingCmds, sub.pendingBytes = nil, 0, 0
	sub.state = subLive
	return nil
}

// sendPage reads one page of rows after *last up to head and queues them.
// It first waits for room in the connection's queue; the page comes from
// the server's page cache, shared with any connection reading the same
// range, and a page read from the Source first waits for the server's
// catch-up budget. So neither one connection nor all of them together hold
// more than their limits of pages read but not yet written. It advances
// *last and reports whether head was reached.
func (sc *ServerConn) sendPage(ctx context.Context, sub *subscription, last *int64, head int64) (bool, error) {
	s := sc.s
	if err := sc.c.waitCatchUpRoom(ctx); err != nil {
		return false, err
	}
	if sub.pageRows == 0 {
		// Until rows are seen, assume the largest that fit a line.
		sub.pageRows = clampPageRows(s.pageBytes/s.cfg.MaxLineLength, s.cfg.CatchUpPageRows)
	}
	p, err := s.pages.get(ctx, sub.stream, *last, head, sub.pageRows)
	if err != nil {
		return false, err
	}
	if !p.found {
		// Tokens without rows up to head: nothing more to send.
		s.pages.release(p)
		*last = head
		return true, nil
	}
	if len(p.b) > 0 {
		sub.pageRows = clampPageRows(int(int64(p.rows)*int64(s.pageBytes)/int64(len(p.b))), s.cfg.CatchUpPageRows)
	}
	c := sc.c
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		s.pages.release(p)
		return false, errConnClosed
	}
	queued := p.lines > 0
	if queued {
		// The item holds our reference until written or dropped.
		c.pushLocked(outItem{b: p.b, n: p.lines, cmd: idRdata, paged: true})
	}
	sub.lastToken = p.last
	c.mu.Unlock()
	if !queued {
		s.pages.release(p)
	}
	*last = p.last
	return p.reached(head), nil
}

func clampPageRows(n, maxRows int) int { return min(max(n, 1), maxRows) }

func (sc *ServerConn) setState(sub *subscription, st subState) bool {
	sc.c.mu.Lock()
	defer sc.c.mu.Unlock()
	if sc.current(sub) != sub {
		return false
	}
	sub.state = st
	return true
}

// current returns the subscription now installed for sub's stream; c.mu is
// held.
func (sc *ServerConn) current(sub *subscription) *subscription {
	if slot := sc.slots[sub.stream]; slot != nil {
		return slot.sub
	}
	return nil
}

// streamSlot is one connection's place in a stream's fan-out list. Publish
// goes straight from the list to the subscription, with no map lookup per
// connection.
type streamSlot struct {
	sc  *ServerConn
	sub *subscription // guarded by sc.c.mu; replaced by a new REPLICATE
}

// deliver offers one published update to the slot's connection.
func (slot *streamSlot) deliver(token int64, it outItem) {
	c := slot.sc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	sub := slot.sub
	if sub == nil || c.closing {
		return
	}
	if sub.state == subLive && token <= sub.lastToken {
		// Publish runs after the update is visible in the Source, so the
		// catch-up may already have read and sent it. (While connecting,
		// step 4 drops those at or below the current token instead.)
		return
	}
	switch sub.state {
	case subLive:
		if c.pushLiveLocked(it) {
			sub.lastToken = token
		}
	case subConnecting:
		// Held until POSITION, behind what is queued: the same limits
		// apply to both together, and an update that finds both empty is
		// taken whatever its size.
		held := c.out.queuedCmds + sub.pendingCmds
		if held > 0 && (held+int(it.n) > c.cfg.limits.cmds || c.out.queuedBytes+sub.pendingBytes+len(it.b) > c.cfg.limits.bytes) {
			c.closeSlowConsumerLocked(sub.stream)
			return
		}
		sub.pending = append(sub.pending, pendingUpdate{token: token, item: it})
		sub.pendingCmds += int(it.n)
		sub.pendingBytes += len(it.b)
	}
}
