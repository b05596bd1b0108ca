package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-logr/logr"
)

// Catch-up pages are shared between connections that read the same range
// (issue 11, item 2). A hundred connections that REPLICATE a stream from 0
// all ask for the page after token 0, then for the page after that page's
// last token, and so on: each such page is read from the Source and encoded
// once, queued to every connection that asks for it while it is held, and
// charged once against the server's catch-up budget. Without sharing, every
// connection read and encoded its own copy, so the budget (not the number
// of distinct rows) was what bounded memory, and CPU per connection was
// that of a whole read.

// pageKey names a page: the stream and the token it follows. Two readers
// continuing after the same token of a stream read the same rows, whatever
// head they are reading towards, so the head is not part of the key (see
// catchUpPage.usableFor).
type pageKey struct {
	stream string
	after  int64
}

// catchUpPage is one read of a stream from the Source, encoded as RDATA
// lines. The fields above refs are written by the reader that fetches the
// page before ready is closed and never change after; refs, charged and
// cached are guarded by pageCache.mu.
type catchUpPage struct {
	key   pageKey
	ready chan struct{} // closed once the page is read, or failed

	b     []byte // the RDATA lines; shared by every queue that holds the page
	lines int32
	rows  int
	// found: the Source had updates after key.after up to upTo; last is the
	// token of the last of them.
	found bool
	last  int64
	// upTo is the head the page was read towards; complete says the Source
	// returned fewer rows than asked, so it holds nothing in (last, upTo].
	upTo     int64
	complete bool
	err      error

	// refs counts the readers waiting for the page and the queue items
	// holding it; the page leaves the cache, and gives back its share of
	// the budget, when the last is done.
	refs    int
	charged int64 // bytes of the budget the page holds
	cached  bool  // in pageCache.byKey: later readers of its key share it
}

// usableFor reports whether a reader catching up towards head may take the
// page: it must not send tokens after head (step 2 of a subscription
// sends POSITION head next, and queued live rows after it), and a page
// without rows says nothing beyond the head it was read towards.
func (p *catchUpPage) usableFor(head int64) bool {
	if p.found {
		return p.last <= head
	}
	return head <= p.upTo
}

// reached reports whether, after this page, a reader catching up towards
// head has nothing more to read.
func (p *catchUpPage) reached(head int64) bool {
	return !p.found || p.last >= head || (p.complete && p.upTo >= head)
}

// Values of the source label of tcprepl_replication_catchup_pages_total.
const (
	pageFetched = "fetched" // read from the Source by this reader
	pageShared  = "shared"  // read by another reader, shared
)

// errPageAbandoned is a page's error when the reader fetching it left (its
// context ended) before the read finished; a reader waiting for it reads
// the page itself.
var errPageAbandoned = errors.New("catch-up page abandoned by its reader")

// pageCache holds the catch-up pages that connections are reading or have
// queued, by key and by the address of their bytes (which is how a written
// queue item finds its page, so that items stay four words).
type pageCache struct {
	src       Source
	budget    *byteBudget
	pageBytes int // what a page is granted before it is read
	maxLine   int
	log       logr.Logger
	metrics   *metrics

	mu     sync.Mutex
	byKey  map[pageKey]*catchUpPage
	byData map[*byte]*catchUpPage
}

func newPageCache(src Source, budget *byteBudget, pageBytes, maxLine int, log logr.Logger, m *metrics) *pageCache {
	return &pageCache{
		src: src, budget: budget, pageBytes: pageBytes, maxLine: maxLine, log: log, metrics: m,
		byKey:  map[pageKey]*catchUpPage{},
		byData: map[*byte]*catchUpPage{},
	}
}

// get returns the page of stream after the token after, read towards head
// with at most about limit rows, holding one reference that the caller
// must give back with release (or hand to a queue item with the page's
// bytes, see releaseData). A page another reader is fetching is waited
// for (single flight); its error from the Source is every waiter's error.
// A page held by others but read towards a later head than ours is not
// usable, and is read again, unshared.
func (pc *pageCache) get(ctx context.Context, stream string, after, head int64, limit int) (*catchUpPage, error) {
	key := pageKey{stream: stream, after: after}
	for {
		pc.mu.Lock()
		p := pc.byKey[key]
		if p == nil {
			p = &catchUpPage{key: key, ready: make(chan struct{}), refs: 1, cached: true}
			pc.byKey[key] = p
			pc.mu.Unlock()
			return pc.fetch(ctx, p, head, limit)
		}
		p.refs++
		pc.mu.Unlock()

		select {
		case <-p.ready:
		case <-ctx.Done():
			pc.release(p)
			return nil, ctx.Err()
		}
		switch {
		case errors.Is(p.err, errPageAbandoned):
			pc.release(p)
			continue // it has left the cache: read it ourselves
		case p.err != nil:
			pc.release(p)
			return nil, p.err
		case p.usableFor(head):
			pc.metrics.catchUpPage(pageShared)
			return p, nil
		}
		pc.release(p)
		own := &catchUpPage{key: key, ready: make(chan struct{}), refs: 1}
		return pc.fetch(ctx, own, head, limit)
	}
}

// fetch reads p from the Source and makes it ready for its waiters. On
// failure p leaves the cache, so later readers try again, and the reader's
// reference is given back.
func (pc *pageCache) fetch(ctx context.Context, p *catchUpPage, head int64, limit int) (*catchUpPage, error) {
	err := pc.read(ctx, p, head, limit)
	if err != nil {
		p.err = err
		if ctx.Err() != nil {
			// Our own cancellation is not the waiters' error.
			p.err = errPageAbandoned
		}
		pc.mu.Lock()
		pc.uncacheLocked(p)
		pc.mu.Unlock()
	}
	close(p.ready)
	if err != nil {
		pc.release(p)
		return nil, err
	}
	pc.metrics.catchUpPage(pageFetched)
	return p, nil
}

// read fills p: it waits for the page's grant of the budget, reads and
// encodes, then charges what the page really holds.
func (pc *pageCache) read(ctx context.Context, p *catchUpPage, head int64, limit int) error {
	grant := int64(pc.pageBytes)
	if err := pc.budget.acquire(ctx, grant); err != nil {
		return err
	}
	stream, after := p.key.stream, p.key.after
	updates, err := pc.src.ReadAfter(ctx, stream, after, head, limit)
	if err != nil {
		pc.budget.release(grant)
		return fmt.Errorf("read stream %s after token %d: %w", stream, after, err)
	}
	p.upTo = head
	if len(updates) == 0 {
		pc.budget.release(grant)
		p.complete = true
		return nil
	}
	last := updates[len(updates)-1].Token
	if last <= after {
		pc.budget.release(grant)
		return fmt.Errorf("source returned stream %s token %d when asked for tokens after %d", stream, last, after)
	}
	// One allocation of the page's size: grown update by update, the
	// buffer left about three times its size in garbage per page, and up
	// to a quarter of spare capacity held by every queue.
	need := 0
	for _, u := range updates {
		for _, row := range u.Rows {
			need += maxRDATAOverhead + len(stream) + len(row) + 1
		}
	}
	buf := make([]byte, 0, need)
	var lines int32
	rows := 0
	for _, u := range updates {
		var n int
		buf, n = appendUpdateLines(buf, u, pc.maxLine, pc.log)
		lines += int32(n)
		rows += len(u.Rows)
	}
	p.b, p.lines, p.rows, p.found, p.last, p.complete = buf, lines, rows, true, last, rows < limit
	if lines == 0 {
		// Every row was unsendable (logged): nothing to hold.
		pc.budget.release(grant)
		return nil
	}
	// Charged what the page holds: its capacity (the estimate of the line
	// prefixes is a bound, a few bytes a row over).
	pc.budget.adjust(int64(cap(buf)) - grant)
	pc.mu.Lock()
	p.charged = int64(cap(buf))
	pc.byData[&buf[0]] = p
	pc.mu.Unlock()
	return nil
}

// release gives back one reference to p.
func (pc *pageCache) release(p *catchUpPage) {
	pc.mu.Lock()
	freed := pc.unrefLocked(p)
	pc.mu.Unlock()
	pc.budget.release(freed)
}

// releaseData gives back the reference a written or dropped queue item
// held, found by the item's bytes (a page's whole b).
func (pc *pageCache) releaseData(b []byte) {
	if len(b) == 0 {
		return
	}
	pc.mu.Lock()
	p := pc.byData[&b[0]]
	var freed int64
	if p != nil {
		freed = pc.unrefLocked(p)
	}
	pc.mu.Unlock()
	if p == nil {
		pc.log.Error(errors.New("no catch-up page holds these bytes"), "releasing a queued catch-up page", "bytes", len(b))
		return
	}
	pc.budget.release(freed)
}

// unrefLocked drops one reference; the last frees the page and returns the
// bytes of budget it held, for the caller to give back outside the lock.
func (pc *pageCache) unrefLocked(p *catchUpPage) int64 {
	p.refs--
	if p.refs > 0 {
		return 0
	}
	pc.uncacheLocked(p)
	if len(p.b) > 0 && pc.byData[&p.b[0]] == p {
		delete(pc.byData, &p.b[0])
	}
	freed := p.charged
	p.charged = 0
	return freed
}

func (pc *pageCache) uncacheLocked(p *catchUpPage) {
	if p.cached && pc.byKey[p.key] == p {
		delete(pc.byKey, p.key)
	}
	p.cached = false
}

// held returns how many pages with bytes are held and the bytes they hold.
func (pc *pageCache) held() (pages int, bytes int64) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, p := range pc.byData {
		bytes += int64(len(p.b))
	}
	return len(pc.byData), bytes
}
