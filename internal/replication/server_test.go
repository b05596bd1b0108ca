package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestSessionExample(t *testing.T) {
	src := NewMemorySource("events", "caches")
	src.Append("events", row(`["ev", []]`))
	src.Append("caches", cacheRow(1))
	srv, addr := startServer(t, ServerConfig{ServerName: "localhost:8823"}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("localhost:8823")
	r.send("NAME synapse.app.appservice", "PING 1490197665618", "REPLICATE events 1", "REPLICATE caches 1")
	// The two subscriptions run concurrently: their POSITIONs may come in
	// either order.
	got := []string{r.readUntil("POSITION")[0], r.readUntil("POSITION")[0]}
	slices.Sort(got)
	if want := []string{"POSITION caches 1", "POSITION events 1"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	waitFor(t, "both subscriptions live", func() bool {
		c := srv.Connections()
		return len(c) == 1 && len(c[0].Subscriptions) == 2 && c[0].Subscriptions[0].State == "subscribed" && c[0].Subscriptions[1].State == "subscribed"
	})
	srv.Publish(src.Append("caches", row(`["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`)))
	r.expectLine(`RDATA caches 2 ["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`)
	if n := srv.Connections()[0].Name; n != "synapse.app.appservice" {
		t.Errorf("connection name %q", n)
	}
}

func TestCatchUpFromToken(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 5; i++ {
		src.Append("caches", cacheRow(i))
	}
	_, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 2")
	got := r.readUntil("POSITION")
	var want []string
	for i := 3; i <= 5; i++ {
		want = append(want, fmt.Sprintf("RDATA caches %d %s", i, cacheRow(i)))
	}
	want = append(want, "POSITION caches 5")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestReplicateNowSendsOnlyFutureRows(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 3; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 3")
	waitForLive(t, srv, "caches")
	srv.Publish(src.Append("caches", cacheRow(4)))
	r.expectLine(fmt.Sprintf("RDATA caches 4 %s", cacheRow(4)))
}

// waitForLive waits until the only connection is subscribed to stream.
func waitForLive(t *testing.T, srv *Server, stream string) {
	t.Helper()
	waitFor(t, stream+" live", func() bool {
		for _, c := range srv.Connections() {
			for _, s := range c.Subscriptions {
				if s.Stream == stream && s.State == "subscribed" {
					return true
				}
			}
		}
		return false
	})
}

func TestReplicateAllNow(t *testing.T) {
	src := NewMemorySource("events", "caches", "typing")
	src.Append("events", row(`["ev", []]`))
	src.Append("typing", row(`["!r:x", []]`))
	src.Append("typing", row(`["!r:x", ["@a:x"]]`))
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE ALL NOW")
	r.expectLine("POSITION events 1")
	r.expectLine("POSITION caches 0")
	r.expectLine("POSITION typing 2")
	for _, s := range []string{"events", "caches", "typing"} {
		waitForLive(t, srv, s)
	}
	srv.Publish(src.Append("caches", cacheRow(1)))
	r.expectLine(fmt.Sprintf("RDATA caches 1 %s", cacheRow(1)))
}

func TestUnsubscribedStreamsAreNotSent(t *testing.T) {
	src := NewMemorySource("events", "caches")
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 0")
	waitForLive(t, srv, "caches")
	srv.Publish(src.Append("events", row(`["ev", ["x"]]`)))
	srv.Publish(src.Append("caches", cacheRow(1)))
	// The events row would have come first had it been sent.
	r.expectLine(fmt.Sprintf("RDATA caches 1 %s", cacheRow(1)))
}

func TestBatchesOnTheWire(t *testing.T) {
	src := NewMemorySource("caches")
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 0")
	r.expectLine("POSITION caches 0")
	waitForLive(t, srv, "caches")
	src.AdvanceToken("caches", 53)
	srv.Publish(src.Append("caches",
		row(`["get_user_by_id", ["@a:x"], 1490197670513]`),
		row(`["get_user_by_id", ["@b:x"], 1490197670513]`),
		row(`["get_user_by_id", ["@c:x"], 1490197670513]`)))
	// docs/protocol.md's batch example, byte for byte.
	r.expectLine(`RDATA caches batch ["get_user_by_id", ["@a:x"], 1490197670513]`)
	r.expectLine(`RDATA caches batch ["get_user_by_id", ["@b:x"], 1490197670513]`)
	r.expectLine(`RDATA caches 54 ["get_user_by_id", ["@c:x"], 1490197670513]`)

	// A batch read during catch-up has the same form.
	r2 := dialRaw(t, addr)
	r2.handshake("test.server")
	r2.send("REPLICATE caches 53")
	r2.expectLine(`RDATA caches batch ["get_user_by_id", ["@a:x"], 1490197670513]`)
	r2.expectLine(`RDATA caches batch ["get_user_by_id", ["@b:x"], 1490197670513]`)
	r2.expectLine(`RDATA caches 54 ["get_user_by_id", ["@c:x"], 1490197670513]`)
	r2.expectLine("POSITION caches 54")
}

// hookSource calls hook before answering CurrentToken, so a test can publish
// at the exact moments of the subscription algorithm.
type hookSource struct {
	*MemorySource
	mu    sync.Mutex
	calls int
	hook  func(call int)
}

func (h *hookSource) CurrentToken(stream string) (int64, error) {
	h.mu.Lock()
	h.calls++
	call := h.calls
	hook := h.hook
	h.mu.Unlock()
	if hook != nil {
		hook(call)
	}
	return h.MemorySource.CurrentToken(stream)
}

// TestRowsQueuedWhileConnecting covers steps 1 to 5 of docs/protocol.md's
// "Subscribing": a row published while the subscription is connecting, and
// visible before the current token is read, goes out once (in the catch-up,
// the queued copy dropped); one published after goes out after POSITION.
func TestRowsQueuedWhileConnecting(t *testing.T) {
	mem := NewMemorySource("caches")
	mem.Append("caches", cacheRow(1))
	src := &hookSource{MemorySource: mem}
	var srv *Server
	src.hook = func(call int) {
		// Call 1 is phase one's head, call 2 is step 2's current token:
		// the subscription is connecting, so Publish queues for it.
		if call == 2 {
			srv.Publish(mem.Append("caches", cacheRow(2)))
		}
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 0")
	got := r.readUntil("POSITION")
	want := []string{
		fmt.Sprintf("RDATA caches 1 %s", cacheRow(1)),
		fmt.Sprintf("RDATA caches 2 %s", cacheRow(2)),
		"POSITION caches 2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	src.mu.Lock()
	src.hook = nil
	src.mu.Unlock()
	waitForLive(t, srv, "caches")
	srv.Publish(mem.Append("caches", cacheRow(3)))
	r.expectLine(fmt.Sprintf("RDATA caches 3 %s", cacheRow(3)))
}

// TestQueuedRowAfterPosition: a row published after the current token was
// read is queued and sent after POSITION, not lost.
func TestQueuedRowAfterPosition(t *testing.T) {
	mem := NewMemorySource("caches")
	src := &blockingSource{MemorySource: mem, reading: make(chan struct{}), release: make(chan struct{})}
	for i := 1; i <= 3; i++ {
		mem.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 0")
	<-src.reading // phase one reads 1..3 (blocked)
	close(src.release)
	// Publish token 4 once rows 1..3 are queued: whether it lands before
	// the subscription reads the current token or after, it must go out
	// exactly once.
	waitFor(t, "connecting", func() bool {
		c := srv.Connections()
		return len(c) == 1 && len(c[0].Subscriptions) == 1 && c[0].Subscriptions[0].LastToken == 3
	})
	srv.Publish(mem.Append("caches", cacheRow(4)))
	got := r.readUntil("RDATA caches 4")
	if len(got) < 4 {
		t.Fatalf("got %q", got)
	}
	for i, l := range got[:3] {
		if want := fmt.Sprintf("RDATA caches %d %s", i+1, cacheRow(i+1)); l != want {
			t.Fatalf("line %d: %q, want %q", i, l, want)
		}
	}
	// Token 4 arrives exactly once, either before POSITION 4 (read in
	// step 2) or after POSITION 3 (queued), never twice.
	tail := strings.Join(got[3:], "\n")
	if n := strings.Count(tail, "RDATA caches 4"); n != 1 {
		t.Fatalf("token 4 sent %d times: %q", n, got)
	}
}

// blockingSource blocks the first ReadAfter until released.
type blockingSource struct {
	*MemorySource
	once    sync.Once
	reading chan struct{}
	release chan struct{}
}

func (b *blockingSource) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]Update, error) {
	first := false
	b.once.Do(func() { first = true })
	if first {
		close(b.reading)
		<-b.release
	}
	return b.MemorySource.ReadAfter(ctx, stream, after, upTo, limit)
}

// TestCatchUpWhilePublishing: a subscriber far behind (many pages) catches
// up while rows keep being published; it receives every row once, in order.
func TestCatchUpWhilePublishing(t *testing.T) {
	src := NewMemorySource("caches")
	const history, live = 20000, 5000
	for i := 1; i <= history; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{CatchUpPageRows: 97, MaxPendingCommands: 2000}, src, &recordingHandler{})
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: addr, Handler: h, Streams: []StreamRequest{{Stream: "caches", Token: 0}}})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := history + 1; i <= history+live; i++ {
			srv.Publish(src.Append("caches", cacheRow(i)))
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // a steady rate, below what the client can take
			}
		}
	}()
	wg.Wait()
	waitFor(t, "all rows", func() bool { return len(h.rowTokens("caches")) >= history+live })
	got := h.rowTokens("caches")
	for i, tok := range got {
		if tok != int64(i+1) {
			t.Fatalf("row %d has token %d: gap or duplicate", i, tok)
		}
	}
	if len(got) != history+live {
		t.Fatalf("got %d rows, want %d", len(got), history+live)
	}
}

func TestUnknownStreamIsAnError(t *testing.T) {
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE nosuch 0")
	got := r.expectClosed()
	if len(got) != 1 || !strings.HasPrefix(got[0], "ERROR failed to handle replicate: ") || !strings.Contains(got[0], "unknown stream") {
		t.Fatalf("got %q", got)
	}
	waitFor(t, "close reason", func() bool { return slices.Contains(h.closeReasons(), CloseSubscribeError) })
}

func TestTokenTooOldIsAnError(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 10; i++ {
		src.Append("caches", cacheRow(i))
	}
	src.Trim("caches", 5)
	_, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 5") // still fine: rows 6.. are held
	r.readUntil("POSITION caches 10")
	r2 := dialRaw(t, addr)
	r2.handshake("test.server")
	r2.send("REPLICATE caches 2")
	got := r2.expectClosed()
	want := "ERROR failed to handle replicate: read stream caches after token 2: stream caches: token 2 is older than retention; the oldest token still held is 6"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestTokenAheadIsAnError: a token the stream has not reached means the log
// was reset; serving it would skip rows silently. NOW and the current token
// itself are fine.
func TestTokenAheadIsAnError(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 3; i++ {
		src.Append("caches", cacheRow(i))
	}
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{}, src, h)
	for _, ok := range []string{"REPLICATE caches 3", "REPLICATE caches NOW"} {
		r := dialRaw(t, addr)
		r.handshake("test.server")
		r.send(ok)
		r.readUntil("POSITION caches 3")
	}
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 120")
	got := r.expectClosed()
	want := "ERROR failed to handle replicate: stream caches: token 120 is ahead of this server's newest token 3; its log was reset or the token came from another server, and rows 4..120 would be skipped: reset the subscriber's saved position to resync"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	waitFor(t, "close reason", func() bool { return slices.Contains(h.closeReasons(), CloseSubscribeError) })
}

// TestConnectionInfo: the connection table has what the master shows.
func TestConnectionInfo(t *testing.T) {
	src := NewMemorySource("caches", "events")
	for i := 1; i <= 4; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	before := time.Now()
	r.send("NAME worker-7", "PING 5", "REPLICATE caches 1", "REPLICATE events NOW")
	r.readUntil("POSITION caches 4")
	waitForLive(t, srv, "caches")
	waitForLive(t, srv, "events")
	srv.Publish(src.Append("caches", cacheRow(5)))
	r.readUntil("RDATA caches 5")
	// The writer clears its pending counts after the write returns, so the
	// row can be read first: wait for the accounting, then check it all.
	info := waitForConn(t, srv, "the queue drained", drained)
	if info.Name != "worker-7" || info.ID == 0 || info.RemoteAddr != r.nc.LocalAddr().String() {
		t.Errorf("identity %+v", info)
	}
	if info.ConnectedSince.After(before) || info.LastReceived.Before(info.ConnectedSince) {
		t.Errorf("times: connected %v, last received %v", info.ConnectedSince, info.LastReceived)
	}
	wantSubs := []SubscriptionInfo{{Stream: "caches", State: "subscribed", LastToken: 5}, {Stream: "events", State: "subscribed", LastToken: 0}}
	if !slices.Equal(info.Subscriptions, wantSubs) {
		t.Errorf("subscriptions %+v, want %+v", info.Subscriptions, wantSubs)
	}
	if info.CommandsOut[CmdRdata] != 4 || info.CommandsOut[CmdPosition] != 2 || info.CommandsOut[CmdServer] != 1 {
		t.Errorf("outbound %v", info.CommandsOut)
	}
	if info.CommandsIn[CmdReplicate] != 2 || info.CommandsIn[CmdName] != 1 || info.CommandsIn[CmdPing] != 1 {
		t.Errorf("inbound %v", info.CommandsIn)
	}
	if info.BytesIn == 0 || info.BytesOut == 0 {
		t.Errorf("bytes in %d out %d pending %d/%d", info.BytesIn, info.BytesOut, info.PendingCommands, info.PendingBytes)
	}
	sc := srv.conns1(t)
	if sc.Name() != "worker-7" || sc.RemoteAddr().String() != info.RemoteAddr || sc.ID() != info.ID {
		t.Errorf("ServerConn accessors disagree with Info")
	}
	for _, s := range []ConnState{ConnEstablished, ConnPaused, ConnClosing, ConnClosed, 7} {
		if s.String() == "" {
			t.Errorf("no name for %d", s)
		}
	}
}

// TestResubscribeReplacesSubscription: a second REPLICATE of a stream
// starts it again from the new token.
func TestResubscribeReplacesSubscription(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 3; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 3")
	r.send("REPLICATE caches 1")
	r.expectLine(fmt.Sprintf("RDATA caches 2 %s", cacheRow(2)))
	r.expectLine(fmt.Sprintf("RDATA caches 3 %s", cacheRow(3)))
	r.expectLine("POSITION caches 3")
	waitForLive(t, srv, "caches")
	srv.Publish(src.Append("caches", cacheRow(4)))
	r.expectLine(fmt.Sprintf("RDATA caches 4 %s", cacheRow(4)))
	if subs := srv.Connections()[0].Subscriptions; len(subs) != 1 {
		t.Fatalf("subscriptions %+v", subs)
	}
}

func TestNewServerChecksConfig(t *testing.T) {
	if _, err := NewServer(ServerConfig{}, NewMemorySource(), nil); err == nil {
		t.Error("accepted an empty server name")
	}
	if _, err := NewServer(ServerConfig{ServerName: "a\nb"}, NewMemorySource(), nil); err == nil {
		t.Error("accepted a server name with a newline")
	}
	if _, err := NewServer(ServerConfig{ServerName: "s"}, nil, nil); err == nil {
		t.Error("accepted a nil source")
	}
}

func TestShutdownDeadline(t *testing.T) {
	src := NewMemorySource("caches")
	srv, err := NewServer(ServerConfig{ServerName: "s", WriteTimeout: time.Hour, MaxPendingCommands: 1 << 20}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	r := dialRaw(t, ln.Addr().String())
	r.handshake("s")
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 0")
	waitForLive(t, srv, "caches")
	big := row(`["` + strings.Repeat("x", 16000) + `"]`)
	waitFor(t, "writer blocked", func() bool {
		for i := 0; i < 50; i++ {
			srv.Publish(src.Append("caches", big))
		}
		return srv.Connections()[0].PendingCommands > 100
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck peer: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

// TestCatchUpNeverTripsSlowConsumer: catch-up waits for queue room, so even
// a catch-up far larger than the slow-consumer limit completes without a
// disconnect.
func TestCatchUpNeverTripsSlowConsumer(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 5000; i++ {
		src.Append("caches", cacheRow(i))
	}
	_, addr := startServer(t, ServerConfig{MaxPendingCommands: 100, CatchUpPageRows: 30}, src, &recordingHandler{})
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: addr, Handler: h, InitialBackoff: time.Hour, Streams: []StreamRequest{{Stream: "caches", Token: 0}}})
	waitFor(t, "caught up", func() bool { return h.caughtUpCount() == 1 })
	if got := h.rowTokens("caches"); len(got) != 5000 || got[4999] != 5000 {
		t.Fatalf("got %d rows", len(got))
	}
	if errs := h.errors(); len(errs) != 0 {
		t.Fatalf("disconnected: %v", errs)
	}
}

// failingSource fails every read.
type failingSource struct{ *MemorySource }

func (failingSource) ReadAfter(context.Context, string, int64, int64, int) ([]Update, error) {
	return nil, errors.New("disk on fire")
}

func TestSourceErrorClosesWithError(t *testing.T) {
	mem := NewMemorySource("caches")
	mem.Append("caches", cacheRow(1))
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{}, failingSource{mem}, h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 0")
	got := r.expectClosed()
	if want := "ERROR failed to handle replicate: read stream caches after token 0: disk on fire"; len(got) != 1 || got[0] != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	waitFor(t, "reason", func() bool { return slices.Contains(h.closeReasons(), CloseSubscribeError) })
}

// TestSlowConsumerWhileConnecting: rows queued for a subscription that is
// connecting count against the slow-consumer limit.
func TestSlowConsumerWhileConnecting(t *testing.T) {
	mem := NewMemorySource("caches")
	src := &hookSource{MemorySource: mem}
	var srv *Server
	src.hook = func(call int) {
		if call == 2 { // connecting: these are queued on the subscription
			for i := 0; i < 11; i++ {
				srv.Publish(mem.Append("caches", cacheRow(i)))
			}
		}
	}
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{MaxPendingCommands: 10}, src, h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 0")
	got := r.expectClosed()
	if len(got) == 0 || got[len(got)-1] != "ERROR Failed to keep up" {
		t.Fatalf("got %q", got)
	}
	waitFor(t, "reason", func() bool { return slices.Contains(h.closeReasons(), CloseSlowConsumer) })
}

// flakyListener fails its first Accepts like a process out of descriptors.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestServeSurvivesAcceptErrors: a failing Accept is retried; a listener
// closed by someone else ends Serve with an error that says so.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	srv, err := NewServer(ServerConfig{ServerName: "s"}, NewMemorySource("caches"), nil)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fails.Store(2)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	r := dialRaw(t, inner.Addr().String())
	r.handshake("s")
	inner.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve returned %v, want a closed-listener error", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
