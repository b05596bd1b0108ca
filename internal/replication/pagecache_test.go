package replication

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// gatedSource is a MemorySource whose reads can be held at a gate, fail,
// and are counted.
type gatedSource struct {
	*MemorySource
	reads atomic.Int64
	// gate, if set, holds every read until it is closed or the read's
	// context ends.
	gate chan struct{}
	fail error // returned by every read once past the gate
}

func (s *gatedSource) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]Update, error) {
	s.reads.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.fail != nil {
		return nil, s.fail
	}
	return s.MemorySource.ReadAfter(ctx, stream, after, upTo, limit)
}

// newTestPageCache returns a cache over a caches stream of n rows, with a
// budget of limit bytes, pages granted 4 KiB before they are read.
func newTestPageCache(t *testing.T, n int, limit int64) (*pageCache, *gatedSource, *prometheus.Registry) {
	t.Helper()
	src := &gatedSource{MemorySource: NewMemorySource("caches")}
	for i := 1; i <= n; i++ {
		src.Append("caches", cacheRow(i))
	}
	reg := prometheus.NewRegistry()
	m, err := metricsFor(reg)
	if err != nil {
		t.Fatal(err)
	}
	return newPageCache(src, newByteBudget(limit), 4<<10, DefaultMaxLineLength, logr.Discard(), m), src, reg
}

func pageCounts(t *testing.T, reg *prometheus.Registry) (fetched, shared float64) {
	t.Helper()
	g := gather(t, reg)
	return g[metricCatchUpPages+"{source=fetched}"], g[metricCatchUpPages+"{source=shared}"]
}

// waitRefs waits until n readers hold or wait for the page of key.
func waitRefs(t *testing.T, pc *pageCache, key pageKey, n int) {
	t.Helper()
	waitFor(t, "readers waiting for the page", func() bool {
		pc.mu.Lock()
		defer pc.mu.Unlock()
		p := pc.byKey[key]
		return p != nil && p.refs == n
	})
}

func TestPageCacheSharesAPage(t *testing.T) {
	pc, src, reg := newTestPageCache(t, 10, 1<<20)
	a, err := pc.get(t.Context(), "caches", 0, 10, 4)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pc.get(t.Context(), "caches", 0, 10, 4)
	if err != nil {
		t.Fatal(err)
	}
	if a != b || src.reads.Load() != 1 {
		t.Fatalf("two readers of the same range: same page %v, %d reads of the source, want the same page and 1", a == b, src.reads.Load())
	}
	if a.rows != 4 || a.last != 4 || a.lines != 4 || a.complete || a.reached(10) {
		t.Fatalf("page: %d rows, last %d, %d lines, complete %v", a.rows, a.last, a.lines, a.complete)
	}
	// Charged once, at its real size, whatever the number of readers.
	if used, _ := pc.budget.inUse(); used != int64(cap(a.b)) {
		t.Fatalf("budget in use %d, want the page's %d bytes once", used, cap(a.b))
	}
	if f, s := pageCounts(t, reg); f != 1 || s != 1 {
		t.Fatalf("pages fetched %v, shared %v, want 1 and 1", f, s)
	}
	// The next page of the chain is another key.
	c, err := pc.get(t.Context(), "caches", a.last, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if c == a || c.last != 10 || !c.complete || !c.reached(10) {
		t.Fatalf("next page: last %d, complete %v", c.last, c.complete)
	}
	// Freed when the last reader is done, not before.
	pc.release(a)
	if pages, _ := pc.held(); pages != 2 {
		t.Fatalf("%d pages held after one of two readers released, want 2", pages)
	}
	pc.release(b)
	pc.release(c)
	if pages, bytes := pc.held(); pages != 0 || bytes != 0 || len(pc.byKey) != 0 {
		t.Fatalf("after every release: %d pages, %d bytes, %d keys held", pages, bytes, len(pc.byKey))
	}
	if used, _ := pc.budget.inUse(); used != 0 {
		t.Fatalf("budget in use %d after every release", used)
	}
	// A page freed is read again by its next reader.
	d, err := pc.get(t.Context(), "caches", 0, 10, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.release(d)
	if d == a || src.reads.Load() != 3 {
		t.Fatalf("a freed page was reused (%v) or not read again (%d reads)", d == a, src.reads.Load())
	}
}

func TestPageCacheSingleFlight(t *testing.T) {
	const readers = 20
	pc, src, reg := newTestPageCache(t, 10, 1<<20)
	src.gate = make(chan struct{})
	pages := make([]*catchUpPage, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pages[i], errs[i] = pc.get(context.Background(), "caches", 0, 10, 100)
		}()
	}
	waitRefs(t, pc, pageKey{"caches", 0}, readers)
	close(src.gate)
	wg.Wait()
	for i := range readers {
		if errs[i] != nil || pages[i] != pages[0] {
			t.Fatalf("reader %d: %v, same page %v", i, errs[i], pages[i] == pages[0])
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("%d concurrent readers of one range read the source %d times, want once", readers, n)
	}
	if used, peak := pc.budget.inUse(); used != int64(cap(pages[0].b)) || peak > int64(pc.pageBytes) {
		t.Fatalf("budget in use %d (peak %d), want one page's %d (granted at most %d)", used, peak, cap(pages[0].b), pc.pageBytes)
	}
	if f, s := pageCounts(t, reg); f != 1 || s != readers-1 {
		t.Fatalf("pages fetched %v, shared %v", f, s)
	}
	for _, p := range pages {
		pc.release(p)
	}
	if used, _ := pc.budget.inUse(); used != 0 {
		t.Fatalf("budget in use %d after every release", used)
	}
}

func TestPageCacheErrorReachesEveryWaiter(t *testing.T) {
	const readers = 5
	pc, src, _ := newTestPageCache(t, 10, 1<<20)
	logErr := errors.New("disk on fire")
	src.gate = make(chan struct{})
	src.fail = logErr
	errs := make(chan error, readers)
	for range readers {
		go func() {
			p, err := pc.get(context.Background(), "caches", 0, 10, 100)
			if err == nil {
				pc.release(p)
			}
			errs <- err
		}()
	}
	waitRefs(t, pc, pageKey{"caches", 0}, readers)
	close(src.gate)
	for range readers {
		if err := <-errs; !errors.Is(err, logErr) {
			t.Fatalf("a waiter got %v, want the log's error", err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source read %d times, want once", n)
	}
	if pages, _ := pc.held(); pages != 0 || len(pc.byKey) != 0 {
		t.Fatal("a failed page stays in the cache")
	}
	if used, _ := pc.budget.inUse(); used != 0 {
		t.Fatalf("budget in use %d after a failed read", used)
	}
	// The failure is not remembered: the next reader reads again.
	src.fail = nil
	p, err := pc.get(t.Context(), "caches", 0, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	pc.release(p)
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("source read %d times, want a second read after the failure", n)
	}
}

func TestPageCacheCancelledReaders(t *testing.T) {
	tests := map[string]struct {
		cancelFetcher bool // else a waiter is cancelled
	}{
		"a waiter leaves": {},
		// Its waiters must not get its cancellation: one of them reads.
		"the reader fetching leaves": {cancelFetcher: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pc, src, _ := newTestPageCache(t, 10, 1<<20)
			src.gate = make(chan struct{})
			key := pageKey{"caches", 0}
			fetchCtx, cancelFetch := context.WithCancel(context.Background())
			defer cancelFetch()
			type result struct {
				p   *catchUpPage
				err error
			}
			fetcher := make(chan result, 1)
			go func() {
				p, err := pc.get(fetchCtx, "caches", 0, 10, 100)
				fetcher <- result{p, err}
			}()
			waitRefs(t, pc, key, 1)
			waitCtx, cancelWait := context.WithCancel(context.Background())
			defer cancelWait()
			waiter := make(chan result, 1)
			go func() {
				p, err := pc.get(waitCtx, "caches", 0, 10, 100)
				waiter <- result{p, err}
			}()
			waitRefs(t, pc, key, 2)

			gone, stays := fetcher, waiter
			if tc.cancelFetcher {
				cancelFetch()
			} else {
				gone, stays = waiter, fetcher
				cancelWait()
			}
			if r := <-gone; !errors.Is(r.err, context.Canceled) {
				t.Fatalf("the reader that left got %v, want context.Canceled", r.err)
			}
			// One reader left: the one that stayed fetches the page (it was
			// abandoned) or still waits for it, at the gate either way.
			waitRefs(t, pc, key, 1)
			close(src.gate)
			r := <-stays
			if r.err != nil || r.p.rows != 10 {
				t.Fatalf("the reader that stayed: %v", r.err)
			}
			pc.release(r.p)
			if want := map[bool]int64{false: 1, true: 2}[tc.cancelFetcher]; src.reads.Load() != want {
				t.Fatalf("%d reads of the source, want %d", src.reads.Load(), want)
			}
			if used, _ := pc.budget.inUse(); used != 0 {
				t.Fatalf("budget in use %d after every reader is done", used)
			}
			if pages, _ := pc.held(); pages != 0 || len(pc.byKey) != 0 {
				t.Fatal("pages held after every reader is done")
			}
		})
	}
}

// TestPageCacheHeadBounds: a page read towards a later head than a reader's
// is not given to it (it must not send tokens past its head); one read
// towards an earlier head is, and says whether the reader is done.
func TestPageCacheHeadBounds(t *testing.T) {
	pc, src, reg := newTestPageCache(t, 10, 1<<20)
	far, err := pc.get(t.Context(), "caches", 0, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.release(far)
	near, err := pc.get(t.Context(), "caches", 0, 5, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.release(near)
	if near == far || near.last != 5 || !near.reached(5) || src.reads.Load() != 2 {
		t.Fatalf("reader towards 5 got a page ending at %d (own read %v, %d reads)", near.last, near != far, src.reads.Load())
	}
	if f, s := pageCounts(t, reg); f != 2 || s != 0 {
		t.Fatalf("pages fetched %v, shared %v", f, s)
	}
	// The unshared page does not replace the cached one.
	again, err := pc.get(t.Context(), "caches", 0, 12, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.release(again)
	if again != far {
		t.Fatal("a reader towards a later head did not share the page")
	}
	// Complete up to 10, so a reader towards 12 is not done (11 and 12
	// may exist by now); one towards 10 is.
	if far.reached(12) || !far.reached(10) {
		t.Fatalf("reached(12) = %v, reached(10) = %v", far.reached(12), far.reached(10))
	}
	if used, _ := pc.budget.inUse(); used != int64(cap(far.b)+cap(near.b)) {
		t.Fatalf("budget in use %d, want both pages once", used)
	}
}

// TestPageCacheEmptyPage: tokens without rows give a page that holds
// nothing and tells the reader it is done.
func TestPageCacheEmptyPage(t *testing.T) {
	pc, src, _ := newTestPageCache(t, 2, 1<<20)
	src.AdvanceToken("caches", 8)
	p, err := pc.get(t.Context(), "caches", 2, 8, 100)
	if err != nil {
		t.Fatal(err)
	}
	if p.found || !p.reached(8) || !p.usableFor(8) || p.usableFor(9) {
		t.Fatalf("empty page: found %v, reached %v", p.found, p.reached(8))
	}
	pc.release(p)
	if used, peak := pc.budget.inUse(); used != 0 || peak != int64(pc.pageBytes) {
		t.Fatalf("budget in use %d (peak %d) after an empty page", used, peak)
	}
}

// TestPageCacheWaitsForBudget: a page waits for room in the budget before
// it is read, and its waiters take none of their own.
func TestPageCacheWaitsForBudget(t *testing.T) {
	pc, src, _ := newTestPageCache(t, 10, 4<<10)
	if err := pc.budget.acquire(t.Context(), 4<<10); err != nil { // fill it
		t.Fatal(err)
	}
	got := make(chan error, 3)
	for range 3 {
		go func() {
			p, err := pc.get(context.Background(), "caches", 0, 10, 100)
			if err == nil {
				pc.release(p)
			}
			got <- err
		}()
	}
	waitRefs(t, pc, pageKey{"caches", 0}, 3)
	if n := src.reads.Load(); n != 0 {
		t.Fatalf("the page was read (%d reads) before the budget had room", n)
	}
	pc.budget.release(4 << 10)
	for range 3 {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("%d reads, want the waited-for page read once", n)
	}
	if used, peak := pc.budget.inUse(); used != 0 || peak != 4<<10 {
		t.Fatalf("budget in use %d, peak %d", used, peak)
	}
}

// TestPageCacheQueueRelease: queue items holding a shared page give back
// their references when written or dropped; the page and its budget are
// freed with the last.
func TestPageCacheQueueRelease(t *testing.T) {
	pc, _, _ := newTestPageCache(t, 10, 1<<20)
	queues := make([]*outQueue, 3)
	for i := range queues {
		queues[i] = &outQueue{pages: pc}
		p, err := pc.get(t.Context(), "caches", 0, 10, 100)
		if err != nil {
			t.Fatal(err)
		}
		queues[i].push(outItem{b: p.b, n: p.lines, cmd: idRdata, paged: true})
		queues[i].push(item(1, 10)) // a live row holds no page
	}
	// One written, one dropped: the page is still held by the third.
	batch := queues[0].take(nil, 1<<20, time.Now())
	queues[0].written()
	queues[0].release(batch)
	queues[1].dropQueued()
	if pages, _ := pc.held(); pages != 1 {
		t.Fatalf("%d pages held by one remaining queue, want 1", pages)
	}
	queues[2].dropQueued()
	if pages, _ := pc.held(); pages != 0 {
		t.Fatalf("%d pages held after every queue let go", pages)
	}
	if used, peak := pc.budget.inUse(); used != 0 || peak > int64(pc.pageBytes) {
		t.Fatalf("budget in use %d, peak %d", used, peak)
	}
}

// TestCatchUpSharedAcrossManyConnections (issue 11, item 2): many
// connections that replicate a stream of 16 KB rows from 0 and never read
// share their catch-up pages: the first page is read once for all of them,
// the pages they hold together never pass the catch-up budget (plus one
// page), and once their writes time out every page and every byte of the
// budget is given back, while a healthy subscriber gets every row.
func TestCatchUpSharedAcrossManyConnections(t *testing.T) {
	const stalled = 40
	const rowCount = 600 // 9.6 MB
	const pendingLimit = 512 << 10
	const catchUpLimit = 2 << 20
	src := &gatedSource{MemorySource: NewMemorySource("caches"), gate: make(chan struct{})}
	for i := 1; i <= rowCount; i++ {
		src.Append("caches", bigRow(i))
	}
	h := &recordingHandler{}
	reg := prometheus.NewRegistry()
	srv, addr := startServer(t, ServerConfig{MaxPendingBytes: pendingLimit, MaxCatchUpBytes: catchUpLimit, WriteTimeout: 2 * time.Second, Registerer: reg}, src, h)
	for range stalled {
		r := dialRaw(t, addr)
		r.send("NAME stalled", "REPLICATE caches 0")
	}
	// Every connection asks for the first page before it is read: one read.
	waitRefs(t, srv.pages, pageKey{"caches", 0}, stalled)
	close(src.gate)
	// Each waiter counts its share once it has the page.
	waitFor(t, "the first page shared by every other connection", func() bool {
		_, shared := pageCounts(t, reg)
		return shared >= stalled-1
	})
	conns := serverConns(srv)

	healthy := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: addr, Name: "healthy", Handler: healthy, Streams: []StreamRequest{{Stream: "caches", Token: 0}}})
	waitFor(t, "healthy caught up", func() bool { return healthy.caughtUpCount() == 1 })
	if got := len(healthy.rowTokens("caches")); got != rowCount {
		t.Fatalf("healthy got %d rows, want %d", got, rowCount)
	}
	page := srv.pageBytes + len(bigRow(0)) + 64 // a page ends after the row that passes its aim
	if _, peak := srv.catchUp.inUse(); peak > catchUpLimit+int64(page) {
		t.Errorf("catch-up pages held at once peaked at %d bytes, over %d plus a page", peak, catchUpLimit)
	}
	for _, sc := range conns {
		if peak := peakQueuedBytes(sc); peak > pendingLimit/2+page {
			t.Errorf("stalled connection %d queued %d bytes of catch-up, over half its limit plus a page", sc.ID(), peak)
		}
	}
	waitFor(t, "stalled connections timed out", func() bool { return len(h.closeReasons()) == stalled })
	if used, _ := srv.catchUp.inUse(); used != 0 {
		t.Errorf("%d bytes of catch-up budget still held after every page was written or dropped", used)
	}
	if pages, bytes := srv.pages.held(); pages != 0 || bytes != 0 {
		t.Errorf("%d pages (%d bytes) still held after every page was written or dropped", pages, bytes)
	}
	fetched, shared := pageCounts(t, reg)
	t.Logf("%d stalled connections: %v pages read from the source, %v shared; %d reads", stalled, fetched, shared, src.reads.Load())
}

// TestPageCacheReleaseUnknownBytes: bytes that no page holds (a bug, not an
// input) are logged and change nothing; they never panic a writer.
func TestPageCacheReleaseUnknownBytes(t *testing.T) {
	pc, _, _ := newTestPageCache(t, 10, 1<<20)
	p, err := pc.get(t.Context(), "caches", 0, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := pc.budget.inUse()
	pc.releaseData(append([]byte(nil), p.b...)) // the same bytes, elsewhere
	pc.releaseData(nil)
	if used, _ := pc.budget.inUse(); used != before || p.refs != 1 {
		t.Fatalf("budget %d -> %d, refs %d", before, used, p.refs)
	}
	pc.releaseData(p.b)
	if used, _ := pc.budget.inUse(); used != 0 {
		t.Fatalf("budget in use %d after the page's own bytes were released", used)
	}
}
