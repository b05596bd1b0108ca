package replication

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// bigRow is a caches row of about 16 KB, just under the line limit.
func bigRow(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`["big", ["%08d"], 1490197670513, "%s"]`, i, strings.Repeat("x", 16000)))
}

// serverConns returns the server's connections, by ID order of arrival.
func serverConns(srv *Server) []*ServerConn {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var out []*ServerConn
	for sc := range srv.conns {
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b *ServerConn) int { return int(a.ID()) - int(b.ID()) })
	return out
}

func peakQueuedBytes(sc *ServerConn) int {
	sc.c.mu.Lock()
	defer sc.c.mu.Unlock()
	return sc.c.out.peakQueuedBytes
}

// TestSlowReadersBoundedInBytes (issue 11, item 2): subscribers that never
// read, sent 16 KB rows, are closed as slow consumers once the bytes queued
// for them pass MaxPendingBytes, long before 10000 commands (160 MB each);
// what was ever queued for each stays under the byte limit, and a healthy
// subscriber receives every row.
func TestSlowReadersBoundedInBytes(t *testing.T) {
	const slowReaders = 5
	const limit = 512 << 10
	src := NewMemorySource("caches")
	h := &recordingHandler{}
	// A slow reader's close ends when its blocked write times out; the
	// reason stays the first one, slow_consumer.
	srv, addr := startServer(t, ServerConfig{MaxPendingBytes: limit, WriteTimeout: 2 * time.Second}, src, h)
	for range slowReaders {
		r := dialRaw(t, addr)
		r.send("NAME slow", "REPLICATE caches NOW")
	}
	healthy := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: addr, Name: "healthy", Handler: healthy, Streams: []StreamRequest{{Stream: "caches", Now: true}}})
	waitFor(t, "all subscribed", func() bool {
		infos := srv.Connections()
		live := 0
		for _, c := range infos {
			if len(c.Subscriptions) == 1 && c.Subscriptions[0].State == "subscribed" {
				live++
			}
		}
		return live == slowReaders+1
	})
	conns := serverConns(srv)

	published := 0
	slowClosed := func() int {
		n := 0
		for _, r := range h.closeReasons() {
			if r == CloseSlowConsumer {
				n++
			}
		}
		return n
	}
	// Publish until every slow reader is closed; loopback buffers absorb a
	// few MB per socket first. 3000 rows (48 MB) is far more than needed,
	// and far less than the 10000 rows the command limit allows.
	slowClosing := func() int {
		n := 0
		for _, sc := range conns {
			sc.c.mu.Lock()
			if sc.c.closeReason == CloseSlowConsumer {
				n++
			}
			sc.c.mu.Unlock()
		}
		return n
	}
	for published < 3000 && slowClosing() < slowReaders {
		published++
		srv.Publish(src.Append("caches", bigRow(published)))
		if published%10 == 0 {
			// A steady rate the healthy client keeps up with.
			waitFor(t, "healthy keeps up", func() bool { return len(healthy.rowTokens("caches")) >= published-10 })
		}
	}
	waitFor(t, "slow readers closed as slow consumers", func() bool { return slowClosed() == slowReaders })
	for _, sc := range conns {
		// The limit counts what waits behind the row at the head.
		if peak := peakQueuedBytes(sc); peak > limit+len(bigRow(0))+64 {
			t.Errorf("connection %d (%s) had %d bytes queued, over the limit of %d plus a row", sc.ID(), sc.Name(), peak, limit)
		}
	}
	waitFor(t, "healthy got every row", func() bool { return len(healthy.rowTokens("caches")) == published })
	for i, tok := range healthy.rowTokens("caches") {
		if tok != int64(i+1) {
			t.Fatalf("healthy row %d has token %d", i, tok)
		}
	}
	if errs := healthy.errors(); len(errs) != 0 {
		t.Fatalf("healthy subscriber disconnected: %v", errs)
	}
	t.Logf("%d rows of 16 KB published before %d slow readers were closing", published, slowReaders)
}

// TestLargeBatchReachesIdleSubscriber (issue 11, item 3): one live update of
// more rows than the command limit is delivered whole to caught-up
// subscribers whose queues are empty, instead of closing them all.
func TestLargeBatchReachesIdleSubscriber(t *testing.T) {
	src := NewMemorySource("caches")
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{}, src, h)
	subs := []*recordingClientHandler{newRecordingClientHandler(), newRecordingClientHandler()}
	for i, ch := range subs {
		runClient(t, ClientConfig{Address: addr, Name: fmt.Sprintf("w%d", i), Handler: ch, Streams: []StreamRequest{{Stream: "caches", Now: true}}})
		waitFor(t, "caught up", func() bool { return ch.caughtUpCount() == 1 })
	}
	waitFor(t, "both live", func() bool {
		infos := srv.Connections()
		return len(infos) == 2 && infos[0].Subscriptions[0].State == "subscribed" && infos[1].Subscriptions[0].State == "subscribed"
	})
	rows := make([]json.RawMessage, DefaultMaxPendingCommands+1)
	for i := range rows {
		rows[i] = cacheRow(i)
	}
	srv.Publish(src.Append("caches", rows...))
	srv.Publish(src.Append("caches", cacheRow(-1)))
	for i, ch := range subs {
		waitFor(t, "both updates", func() bool { return len(ch.rowTokens("caches")) == len(rows)+1 })
		ch.mu.Lock()
		got := ch.batches["caches"]
		ch.mu.Unlock()
		if len(got) != 2 || len(got[0]) != len(rows) || string(got[0][len(rows)-1]) != string(rows[len(rows)-1]) {
			t.Fatalf("subscriber %d got %d batches", i, len(got))
		}
		if errs := ch.errors(); len(errs) != 0 || ch.caughtUpCount() != 1 {
			t.Fatalf("subscriber %d reconnected: %v", i, errs)
		}
	}
	if reasons := h.closeReasons(); len(reasons) != 0 {
		t.Fatalf("connections closed: %v", reasons)
	}
}

// TestCatchUpBoundedAcrossConnections (issue 11, item 2): connections that
// replicate a stream of 16 KB rows from the start and never read hold at
// most MaxCatchUpBytes of catch-up pages together (plus one page's
// overshoot), each at most half its byte limit plus a page; once their
// writes time out, a healthy subscriber catches up everything.
func TestCatchUpBoundedAcrossConnections(t *testing.T) {
	const stalled = 8
	const rowCount = 1200 // 19 MB
	const pendingLimit = 512 << 10
	const catchUpLimit = 1 << 20
	src := NewMemorySource("caches")
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
	waitFor(t, "stalled connections", func() bool { return len(srv.Connections()) == stalled })
	// The gauge shows the pages the stalled connections hold.
	waitFor(t, "catch-up bytes exported", func() bool { return gather(t, reg)[metricCatchUpBytes+"{}"] > 0 })
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
	waitFor(t, "stalled connections timed out", func() bool {
		return len(h.closeReasons()) == stalled && !slices.ContainsFunc(h.closeReasons(), func(r string) bool { return r != CloseWriteTimeout })
	})
	if used, _ := srv.catchUp.inUse(); used != 0 {
		t.Errorf("%d bytes of catch-up budget still held after every page was written or dropped", used)
	}
	if g := gather(t, reg)[metricCatchUpBytes+"{}"]; g != 0 {
		t.Errorf("%s = %v once every page was written or dropped", metricCatchUpBytes, g)
	}
}

// TestCatchUpAcrossTokenZero: a catch-up page that ends at token 0 is a page
// like any other (tokens are only required to grow).
func TestCatchUpAcrossTokenZero(t *testing.T) {
	src := NewMemorySource()
	src.AddStream("caches", -3)
	for i := 1; i <= 5; i++ { // tokens -2 to 2
		src.Append("caches", cacheRow(i))
	}
	_, addr := startServer(t, ServerConfig{CatchUpPageRows: 3}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches -3")
	for tok := -2; tok <= 2; tok++ {
		r.expectLine(fmt.Sprintf("RDATA caches %d %s", tok, cacheRow(tok+3)))
	}
	r.expectLine("POSITION caches 2")
}
