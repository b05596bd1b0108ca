package replication

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var clockStart = time.Date(2020, 1, 15, 12, 0, 0, 0, time.UTC)

// waitTickers waits until n keep-alive loops run on the clock, so that an
// Advance is seen by them.
func waitTickers(t *testing.T, clock *ManualClock, n int) {
	t.Helper()
	waitFor(t, strconv.Itoa(n)+" tickers", func() bool { return clock.Tickers() >= n })
}

// expectPing reads the next line and checks it is PING with the clock's time.
func (r *rawClient) expectPing(clock *ManualClock) {
	r.t.Helper()
	want := "PING " + strconv.FormatInt(clock.Now().UnixMilli(), 10)
	if l := r.readLine(); l != want {
		r.t.Fatalf("got %q, want %q", l, want)
	}
}

// TestServerPingsWhenIdle: the server sends PING <now_ms> after 5 s without
// sending anything, and not before.
func TestServerPingsWhenIdle(t *testing.T) {
	clock := NewManualClock(clockStart)
	_, addr := startServer(t, ServerConfig{Clock: clock}, NewMemorySource("caches"), &recordingHandler{})
	r := dialRaw(t, addr)
	r.expectLine("SERVER test.server")
	r.expectPing(clock)
	waitTickers(t, clock, 1)
	for i := 0; i < 3; i++ {
		clock.Advance(5 * time.Second)
		r.expectPing(clock)
	}
}

// TestServerTimeoutNotArmedWithoutPing: a peer that never sent PING (a human
// on netcat) is never timed out.
func TestServerTimeoutNotArmedWithoutPing(t *testing.T) {
	clock := NewManualClock(clockStart)
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{Clock: clock}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	waitTickers(t, clock, 1)
	for i := 0; i < 20; i++ { // 100 s of silence
		clock.Advance(5 * time.Second)
		r.expectPing(clock)
	}
	r.send("SYNC still-here")
	waitFor(t, "SYNC handled", func() bool { return len(h.commands()) == 1 })
	if len(h.closeReasons()) != 0 {
		t.Fatalf("closed: %v", h.closeReasons())
	}
}

// TestServerTimeoutArmedByPing: once the peer has sent PING, 25 s without
// anything received gets "ERROR ping timeout" and a close; a tick at exactly
// 25 s does not.
func TestServerTimeoutArmedByPing(t *testing.T) {
	clock := NewManualClock(clockStart)
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{Clock: clock}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("PING 1")
	waitFor(t, "PING received", func() bool {
		c := srv.Connections()
		return len(c) == 1 && c[0].CommandsIn[CmdPing] == 1
	})
	waitTickers(t, clock, 1)
	for i := 0; i < 5; i++ { // up to 25 s: still open
		clock.Advance(5 * time.Second)
		r.expectPing(clock)
	}
	clock.Advance(5 * time.Second) // 30 s
	r.expectPing(clock)            // sent before the check in the same tick
	if got := r.expectClosed(); len(got) != 1 || got[0] != "ERROR ping timeout" {
		t.Fatalf("got %q", got)
	}
	waitFor(t, "close reason", func() bool { return slices.Contains(h.closeReasons(), ClosePingTimeout) })
}

// TestReceivingResetsTimeout: any command received keeps the connection.
func TestReceivingResetsTimeout(t *testing.T) {
	clock := NewManualClock(clockStart)
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{Clock: clock}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("PING 1")
	waitTickers(t, clock, 1)
	for i := 0; i < 12; i++ { // 60 s, with a command every 20 s
		if i%4 == 0 {
			r.send("NAME n" + strconv.Itoa(i))
			want := "n" + strconv.Itoa(i)
			waitFor(t, "NAME", func() bool { return srv.Connections()[0].Name == want })
		}
		clock.Advance(5 * time.Second)
		r.expectPing(clock)
	}
	if len(h.closeReasons()) != 0 {
		t.Fatalf("closed: %v", h.closeReasons())
	}
}

// TestUnfinishedCloseIsAborted: a close whose final writes cannot complete
// (the peer reads nothing) is aborted after the ping timeout.
func TestUnfinishedCloseIsAborted(t *testing.T) {
	clock := NewManualClock(clockStart)
	h := &recordingHandler{}
	src := NewMemorySource("caches")
	srv, addr := startServer(t, ServerConfig{Clock: clock, WriteTimeout: time.Hour, MaxPendingCommands: 1 << 20}, src, h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 0")
	waitForLive(t, srv, "caches")
	// Fill the socket buffers: the writer blocks with commands pending.
	big := row(`["` + strings.Repeat("x", 16000) + `"]`)
	waitFor(t, "writer blocked", func() bool {
		for i := 0; i < 50; i++ {
			srv.Publish(src.Append("caches", big))
		}
		return srv.Connections()[0].PendingCommands > 100
	})
	srv.conns1(t).CloseWithError("bye")
	waitTickers(t, clock, 1)
	for i := 0; i < 5; i++ { // 25 s: the close is still allowed to finish
		clock.Advance(5 * time.Second)
	}
	if got := h.closeReasons(); len(got) != 0 {
		t.Fatalf("closed before the timeout: %v", got)
	}
	waitFor(t, "abort", func() bool {
		clock.Advance(5 * time.Second)
		return len(h.closeReasons()) == 1
	})
	if got := h.closeReasons()[0]; got != CloseRequested {
		t.Fatalf("close reason %q", got)
	}
}

// TestClientPingTimeout: the client times out a server that pinged once and
// then went silent, and reports ErrPingTimeout.
func TestClientPingTimeout(t *testing.T) {
	clock := NewManualClock(clockStart)
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: fs.addr(), Handler: h, Clock: clock, InitialBackoff: time.Hour})
	peer := fs.accept()
	peer.send("SERVER test.server", "PING 1", "SYNC armed")
	if l := peer.readLine(); !strings.HasPrefix(l, "PING ") {
		t.Fatalf("client's first line %q", l)
	}
	// The SYNC handled means the PING before it armed the timeout.
	waitFor(t, "PING handled", func() bool { return h.syncCount() == 1 })
	waitTickers(t, clock, 1)
	for i := 0; i < 6; i++ {
		clock.Advance(5 * time.Second)
		peer.expectPing(clock)
	}
	if got := peer.expectClosed(); len(got) != 1 || got[0] != "ERROR ping timeout" {
		t.Fatalf("got %q", got)
	}
	waitFor(t, "disconnect reported", func() bool { return len(h.errors()) == 1 })
	if err := h.errors()[0]; !errors.Is(err, ErrPingTimeout) {
		t.Fatalf("disconnect error %v does not wrap ErrPingTimeout", err)
	}
}

func TestManualClockTickers(t *testing.T) {
	clock := NewManualClock(clockStart)
	tk := clock.NewTicker(time.Second)
	clock.Advance(999 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked early")
	default:
	}
	clock.Advance(2 * time.Second) // crosses two deadlines: one tick kept
	if got := <-tk.C(); !got.Equal(clockStart.Add(2999 * time.Millisecond)) {
		t.Fatalf("tick at %v", got)
	}
	tk.Stop()
	if clock.Tickers() != 0 {
		t.Fatal("ticker not removed")
	}
	if zero := clock.NewTicker(0); zero == nil {
		t.Fatal("no ticker for a zero interval")
	} else {
		zero.Stop()
	}
}

// TestServerPingsEveryTickLikeSynapse: Synapse's 2020 master runs its
// keep-alive every 5 s and pings when 5 s have passed since its last send,
// its own previous PING included, so an idle connection gets a PING every
// 5 s. Here the first tick is handled 1 ms late (the PING goes out at
// 5.001 s) and the next one on time (10 s), 4.999 s after that send: it
// must still ping. A command sent between two ticks makes the next tick
// skip its PING, and the one after pings again.
func TestServerPingsEveryTickLikeSynapse(t *testing.T) {
	clock := NewManualClock(clockStart)
	src := NewMemorySource("caches")
	_, addr := startServer(t, ServerConfig{Clock: clock}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.expectLine("SERVER test.server")
	r.expectPing(clock)
	waitTickers(t, clock, 1)
	advance := func(d time.Duration) {
		t.Helper()
		clock.Advance(d)
		waitFor(t, "tick taken", func() bool { return clock.TicksWaiting() == 0 })
	}
	advance(5*time.Second + time.Millisecond)
	r.expectPing(clock) // at 5.001 s
	advance(5*time.Second - time.Millisecond)
	r.expectPing(clock) // at 10 s, 4.999 s after the last PING
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 0")
	advance(5 * time.Second) // 15 s: POSITION went out since the last tick
	advance(5 * time.Second) // 20 s: nothing since the last tick
	r.expectPing(clock)      // a PING stamped 15 s would fail here
}
