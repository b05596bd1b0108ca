package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestClientReplicatesAndCatchesUp(t *testing.T) {
	src := NewMemorySource("caches", "events")
	for i := 1; i <= 10; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{
		Address: addr, ServerName: "test.server", Name: "worker1", Handler: h,
		Streams: []StreamRequest{{Stream: "caches", Token: 4}, {Stream: "events", Now: true}},
	})
	waitFor(t, "caught up", func() bool { return h.caughtUpCount() == 1 })
	srv.Publish(src.Append("caches", cacheRow(11), cacheRow(12)))
	waitFor(t, "rows", func() bool { return len(h.rowTokens("caches")) == 8 })
	want := []int64{5, 6, 7, 8, 9, 10, 11, 11}
	if got := h.rowTokens("caches"); !slices.Equal(got, want) {
		t.Fatalf("row tokens %v, want %v", got, want)
	}
}

// TestClientOpeningSequence: NAME, PING, one REPLICATE per stream, then the
// commands queued while disconnected, in that order.
func TestClientOpeningSequence(t *testing.T) {
	clock := NewManualClock(clockStart)
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	c, err := NewClient(ClientConfig{
		Address: fs.addr(), ServerName: "test.server", Name: "synapse.app.synchrotron", Handler: h, Clock: clock,
		Streams: []StreamRequest{{Stream: "caches", Token: 5}, {Stream: "events", Now: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(UserSyncCommand{UserID: "@a:x", Active: true, LastSyncMS: 7}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(PositionCommand{Stream: "caches", Token: 1}); err == nil {
		t.Fatal("a client sent POSITION")
	}
	if err := c.Send(PingCommand{Data: strings.Repeat("x", DefaultMaxLineLength)}); err == nil {
		t.Fatal("an over-long command was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	peer := fs.accept()
	peer.send("SERVER test.server", "PING 1")
	ms := strconv.FormatInt(clockStart.UnixMilli(), 10)
	for _, want := range []string{"NAME synapse.app.synchrotron", "PING " + ms, "REPLICATE caches 5", "REPLICATE events NOW", "USER_SYNC @a:x start 7"} {
		if got := peer.readLine(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	peer.send("POSITION caches 9")
	waitFor(t, "position", func() bool { return c.Positions()["caches"] == 9 })
	if h.caughtUpCount() != 0 {
		t.Fatal("caught up before every stream had its POSITION")
	}
	peer.send("POSITION events 3")
	waitFor(t, "caught up", func() bool { return h.caughtUpCount() == 1 })
	// Connected: Send goes straight out.
	if err := c.Send(FederationAckCommand{Token: 4}); err != nil {
		t.Fatal(err)
	}
	if got := peer.readLine(); got != "FEDERATION_ACK 4" {
		t.Fatalf("got %q", got)
	}
	if err := c.Run(ctx); err == nil {
		t.Fatal("a second Run was allowed")
	}
}

func TestClientWrongRemote(t *testing.T) {
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: fs.addr(), ServerName: "right", Handler: h, InitialBackoff: time.Hour})
	peer := fs.accept()
	peer.send("SERVER wrong")
	got := peer.expectClosed()
	if len(got) == 0 || got[len(got)-1] != "ERROR Wrong remote" {
		t.Fatalf("got %q", got)
	}
	waitFor(t, "disconnect", func() bool { return len(h.errors()) == 1 })
	if !errors.Is(h.errors()[0], ErrWrongRemote) {
		t.Fatalf("error %v does not wrap ErrWrongRemote", h.errors()[0])
	}
}

// TestClientRejectsBadServerLines: the client side of the hardening rules.
func TestClientRejectsBadServerLines(t *testing.T) {
	cases := []struct{ name, line, want string }{
		{"wrong direction", "NAME x", "ERROR invalid command: NAME"},
		{"unknown", "HELLO", "ERROR invalid command: HELLO"},
		{"bad row", "RDATA caches 1 [", "ERROR failed to parse line for RDATA: row: invalid JSON at byte 1: unexpected end of input, expected a value"},
		{"too long", "RDATA caches 1 [\"" + strings.Repeat("x", DefaultMaxLineLength) + "\"]", "ERROR Line length exceeded"},
		{"no arguments", "POSITION", "ERROR failed to parse line for POSITION: expected <stream_name> <token>"},
		// RDATA is checked field by field in one pass, not line-wide.
		{"NUL in stream", "RDATA cac\x00hes 1 []", "ERROR failed to parse line for RDATA: stream name is not valid UTF-8 or contains a NUL byte"},
		{"bad UTF-8 in stream", "RDATA cach\xe9s 1 []", "ERROR failed to parse line for RDATA: stream name is not valid UTF-8 or contains a NUL byte"},
		{"bad UTF-8 in row", "RDATA caches 1 [\"\xff\"]", "ERROR failed to parse line for RDATA: row: invalid JSON at byte 2: invalid UTF-8 in a string"},
		{"NUL in row", "RDATA caches 1 [\"a\x00\"]", "ERROR failed to parse line for RDATA: row: invalid JSON at byte 3: control character in a string"},
		{"NUL in token", "RDATA caches 1\x00 []", "ERROR failed to parse line for RDATA: token: \"1\\x00\" is not an integer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeServer(t)
			h := newRecordingClientHandler()
			runClient(t, ClientConfig{Address: fs.addr(), Handler: h, InitialBackoff: time.Hour})
			peer := fs.accept()
			peer.send("SERVER s", tc.line)
			got := peer.expectClosed()
			if len(got) == 0 || got[len(got)-1] != tc.want {
				t.Fatalf("got %q, want last %q", got, tc.want)
			}
		})
	}
}

// TestClientRemoteError: an ERROR from the server is reported with the
// disconnect that follows it.
func TestClientRemoteError(t *testing.T) {
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: fs.addr(), Handler: h, InitialBackoff: time.Hour})
	peer := fs.accept()
	peer.send("SERVER s", "ERROR server stopping")
	peer.nc.Close()
	waitFor(t, "disconnect", func() bool { return len(h.errors()) == 1 })
	var re *RemoteError
	if !errors.As(h.errors()[0], &re) || re.Message != "server stopping" {
		t.Fatalf("error %v is not the server's ERROR", h.errors()[0])
	}
}

// TestClientBatches: batch rows are collected and handed over with the
// numeric token; a batch cut by a disconnect is dropped and asked for again.
func TestClientBatches(t *testing.T) {
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	c := runClient(t, ClientConfig{Address: fs.addr(), Handler: h, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Streams: []StreamRequest{{Stream: "caches", Token: 0}}})
	peer := fs.accept()
	peer.readUntil("REPLICATE caches 0")
	peer.send("SERVER s", "POSITION caches 0",
		`RDATA caches batch ["a"]`, `RDATA typing 3 ["!r", []]`, `RDATA caches batch ["b"]`, `RDATA caches 7 ["c"]`,
		`RDATA caches batch ["d"]`)
	waitFor(t, "batch", func() bool { return len(h.rowTokens("caches")) == 3 })
	h.mu.Lock()
	got := h.batches["caches"]
	h.mu.Unlock()
	if len(got) != 1 || string(got[0][0]) != `["a"]` || string(got[0][1]) != `["b"]` || string(got[0][2]) != `["c"]` {
		t.Fatalf("batches %q", got)
	}
	if p := c.Positions(); p["caches"] != 7 || p["typing"] != 3 {
		t.Fatalf("positions %v", p)
	}
	peer.nc.Close() // mid-batch
	peer2 := fs.accept()
	if l := peer2.readUntil("REPLICATE caches"); l[len(l)-1] != "REPLICATE caches 7" {
		t.Fatalf("resumed with %q", l[len(l)-1])
	}
	peer2.send("SERVER s", `RDATA caches batch ["d"]`, `RDATA caches 8 ["e"]`, "POSITION caches 8")
	waitFor(t, "second batch", func() bool { return len(h.rowTokens("caches")) == 5 })
	h.mu.Lock()
	got = h.batches["caches"]
	h.mu.Unlock()
	if len(got) != 2 || len(got[1]) != 2 || string(got[1][0]) != `["d"]` {
		t.Fatalf("batches %q", got)
	}
}

// TestClientResumesWithoutLossOrDuplicate: connections are cut (by the
// server, and by a failing handler) while rows are published; the handler
// sees every row exactly once, in order.
func TestClientResumesWithoutLossOrDuplicate(t *testing.T) {
	src := NewMemorySource("caches", "events")
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	h := newRecordingClientHandler()
	h.failAt["caches"] = 700
	runClient(t, ClientConfig{Address: addr, Handler: h, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Streams: []StreamRequest{{Stream: "caches", Token: 0}, {Stream: "events", Token: 0}}})
	const total = 3000
	for i := 1; i <= total; i++ {
		if i%3 == 0 {
			srv.Publish(src.Append("caches", cacheRow(i), cacheRow(-i)))
		} else {
			srv.Publish(src.Append("caches", cacheRow(i)))
		}
		if i%2 == 0 {
			srv.Publish(src.Append("events", row(`["ev", []]`)))
		}
		if i%500 == 0 {
			srv.mu.Lock()
			for sc := range srv.conns {
				sc.CloseWithError("test cut")
			}
			srv.mu.Unlock()
		}
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	wantRows := total + total/3
	waitFor(t, "all rows", func() bool { return len(h.rowTokens("caches")) >= wantRows && len(h.rowTokens("events")) >= total/2 })
	var want []int64
	for i := 1; i <= total; i++ {
		want = append(want, int64(i))
		if i%3 == 0 {
			want = append(want, int64(i))
		}
	}
	if got := h.rowTokens("caches"); !slices.Equal(got, want) {
		t.Fatalf("caches rows: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	if got := h.rowTokens("events"); len(got) != total/2 || got[len(got)-1] != total/2 {
		t.Fatalf("events rows: %d, last %d", len(got), got[len(got)-1])
	}
	if len(h.errors()) < 2 {
		t.Fatalf("expected disconnects, got %v", h.errors())
	}
}

func firstDiff(a, b []int64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestClientReplicateAllResumesPerStream: REPLICATE ALL NOW learns the
// streams from their POSITIONs; after a reconnect each resumes by name.
func TestClientReplicateAllResumesPerStream(t *testing.T) {
	src := NewMemorySource("events", "caches")
	src.Append("events", row(`["ev", []]`))
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	h := newRecordingClientHandler()
	c := runClient(t, ClientConfig{Address: addr, Handler: h, InitialBackoff: time.Millisecond, Streams: []StreamRequest{{Stream: "ALL", Now: true}}})
	waitFor(t, "caught up", func() bool { return h.caughtUpCount() == 1 })
	waitFor(t, "both positions", func() bool { return len(c.Positions()) == 2 })
	waitForLive(t, srv, "caches")
	waitForLive(t, srv, "events")
	srv.Publish(src.Append("caches", cacheRow(1)))
	waitFor(t, "row", func() bool { return len(h.rowTokens("caches")) == 1 })
	srv.conns1(t).CloseWithError("cut")
	// While disconnected, more rows: they must arrive after the resume.
	srv.Publish(src.Append("caches", cacheRow(2)))
	srv.Publish(src.Append("events", row(`["ev", [2]]`)))
	waitFor(t, "resumed", func() bool { return len(h.rowTokens("caches")) == 2 && len(h.rowTokens("events")) == 1 })
	waitFor(t, "caught up again", func() bool { return h.caughtUpCount() == 2 })
	// The server may still be tearing the first connection down: wait for
	// it to leave the table, then check the resumed one.
	subs := waitForConn(t, srv, "only the resumed connection", func(ConnectionInfo) bool { return true }).Subscriptions
	if len(subs) != 2 || subs[0].Stream != "caches" || subs[1].Stream != "events" {
		t.Fatalf("subscriptions after resume %+v", subs)
	}
}

func TestNewClientChecksConfig(t *testing.T) {
	h := newRecordingClientHandler()
	for _, cfg := range []ClientConfig{
		{Handler: h},
		{Address: "x:1"},
		{Address: "x:1", Handler: h, Streams: []StreamRequest{{Stream: "ALL", Token: 3}}},
		{Address: "x:1", Handler: h, Streams: []StreamRequest{{Stream: "a b"}}},
		{Address: "x:1", Handler: h, Streams: []StreamRequest{{Stream: ""}}},
		{Address: "x:1", Handler: h, Name: "a\nb"},
	} {
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("NewClient(%+v) accepted", cfg)
		}
	}
	for _, s := range []ClientState{ClientConnecting, ClientConnected, ClientCaughtUp, ClientDisconnected, 9} {
		if s.String() == "" {
			t.Errorf("no name for state %d", s)
		}
	}
}

func TestClientDialFailureRetries(t *testing.T) {
	h := newRecordingClientHandler()
	var dials atomic.Int32
	runClient(t, ClientConfig{Address: "127.0.0.1:1", Handler: h, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return nil, errors.New("no route")
		}})
	waitFor(t, "retries", func() bool { return dials.Load() >= 3 })
	if err := h.errors()[0]; !strings.Contains(err.Error(), "dial replication server 127.0.0.1:1: no route") {
		t.Fatalf("error %v", err)
	}
}

func TestClientOutboxIsBounded(t *testing.T) {
	c, err := NewClient(ClientConfig{Address: "127.0.0.1:1", Handler: newRecordingClientHandler(), MaxPendingCommands: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := c.Send(FederationAckCommand{Token: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Send(FederationAckCommand{Token: 9}); !errors.Is(err, errOutboxFull) {
		t.Fatalf("fourth Send: %v", err)
	}
}

// TestClientHandlerErrorResumesFromLastGoodToken: a failing HandleRows
// disconnects, and the reconnect asks for the rows after the last token
// handled successfully.
func TestClientHandlerErrorResumesFromLastGoodToken(t *testing.T) {
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	h.failAt["caches"] = 3
	runClient(t, ClientConfig{Address: fs.addr(), Handler: h, InitialBackoff: time.Millisecond, Streams: []StreamRequest{{Stream: "caches", Token: 0}}})
	peer := fs.accept()
	peer.send("SERVER s", `RDATA caches 1 ["a"]`, `RDATA caches 2 ["b"]`, `RDATA caches 3 ["c"]`, `RDATA caches 4 ["d"]`)
	peer.expectClosed()
	peer2 := fs.accept()
	if l := peer2.readUntil("REPLICATE"); l[len(l)-1] != "REPLICATE caches 2" {
		t.Fatalf("resumed with %q", l[len(l)-1])
	}
	waitFor(t, "error reported", func() bool { return len(h.errors()) == 1 })
	if err := h.errors()[0]; !strings.Contains(err.Error(), "injected failure at caches 3") {
		t.Fatalf("error %v", err)
	}
}

// TestClientSendsFullOutboxOnConnect: a full outbox plus the opening
// commands is more than the slow-consumer limit, and still all goes out.
func TestClientSendsFullOutboxOnConnect(t *testing.T) {
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), h)
	c, err := NewClient(ClientConfig{Address: addr, Handler: newRecordingClientHandler(), MaxPendingCommands: 20,
		Streams: []StreamRequest{{Stream: "caches", Now: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := c.Send(FederationAckCommand{Token: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "all commands", func() bool { return len(h.commands()) == 20 })
	for i, cmd := range h.commands() {
		if cmd != (FederationAckCommand{Token: int64(i)}) {
			t.Fatalf("command %d: %#v", i, cmd)
		}
	}
}

// TestClientRowsAreTheHandlers: the rows (and slice) a handler gets stay as
// they were after later batches reuse the client's scratch, and appending to
// one row of a batch does not overwrite the next.
func TestClientRowsAreTheHandlers(t *testing.T) {
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: fs.addr(), Handler: h, InitialBackoff: time.Hour})
	peer := fs.accept()
	var lines, want []string
	for tok := 1; tok <= 50; tok++ {
		for i := range tok % 4 {
			row := fmt.Sprintf(`["batch %d row %d", %d]`, tok, i, i)
			lines = append(lines, "RDATA caches batch "+row)
			want = append(want, row)
		}
		row := fmt.Sprintf(`{"token": %d}`, tok)
		lines = append(lines, fmt.Sprintf("RDATA caches %d %s", tok, row), fmt.Sprintf(`RDATA typing %d []`, tok))
		want = append(want, row)
	}
	peer.send(append([]string{"SERVER s"}, lines...)...)
	waitFor(t, "rows", func() bool { return len(h.rowTokens("typing")) == 50 })
	h.mu.Lock()
	defer h.mu.Unlock()
	var got []string
	for _, rows := range h.batches["caches"] {
		for _, r := range rows {
			got = append(got, string(r))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kept rows changed:\n got %q\nwant %q", got, want)
	}
	// Rows of one call, and of consecutive calls, may share a block, and
	// so may their slices: appending to any row or slice must copy it,
	// not overwrite its neighbours.
	for _, rows := range h.batches["caches"] {
		if grown := append(rows, json.RawMessage("garbage")); len(grown) != len(rows)+1 {
			t.Fatal("append to rows")
		}
		for _, r := range rows {
			if grown := append(r, "garbage"...); !strings.HasSuffix(string(grown), "garbage") {
				t.Fatalf("append to %q", r)
			}
		}
	}
	got = got[:0]
	for _, rows := range h.batches["caches"] {
		for _, r := range rows {
			got = append(got, string(r))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("appending to rows overwrote others:\n got %q\nwant %q", got, want)
	}
	for _, rows := range h.batches["typing"] {
		if len(rows) != 1 || string(rows[0]) != "[]" {
			t.Fatalf("appending to rows overwrote typing rows %q", rows)
		}
	}
}

// TestClientRowsOfEverySize: calls of every shape the row arena treats
// differently (many tiny rows, rows over the shared-block limit, a batch
// larger than the scratch kept between batches) arrive intact and stay so.
func TestClientRowsOfEverySize(t *testing.T) {
	fs := newFakeServer(t)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: fs.addr(), Handler: h, InitialBackoff: time.Hour})
	peer := fs.accept()
	var lines []string
	var want [][]string
	token := 0
	call := func(rows ...string) {
		token++
		for _, r := range rows[:len(rows)-1] {
			lines = append(lines, "RDATA caches batch "+r)
		}
		lines = append(lines, fmt.Sprintf("RDATA caches %d %s", token, rows[len(rows)-1]))
		want = append(want, rows)
	}
	str := func(n int, c string) string { return `"` + strings.Repeat(c, n-2) + `"` }
	var tiny, big []string
	for i := range 200 {
		tiny = append(tiny, strconv.Itoa(i%10))
	}
	for range 300 {
		big = append(big, str(1000, "b"))
	}
	call("1")
	call(tiny...)                      // over 128 rows in under 1 KiB
	call(str(1024, "s"))               // exactly the shared-block limit
	call(str(1025, "l"))               // just over it
	call(str(4000, "m"), str(10, "n")) // a batch over it
	call(big...)                       // more than the scratch kept between batches
	call(str(6000, "a"), "2", "3")
	for i := range 100 {
		call(str(10+i*7, "x")) // fills several shared blocks
	}
	peer.send(append([]string{"SERVER s"}, lines...)...)
	waitFor(t, "rows", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.batches["caches"]) == len(want)
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, rows := range h.batches["caches"] {
		if len(rows) != len(want[i]) || cap(rows) != len(rows) {
			t.Fatalf("call %d: %d rows (cap %d), want %d", i, len(rows), cap(rows), len(want[i]))
		}
		for j, r := range rows {
			if string(r) != want[i][j] || cap(r) != len(r) {
				t.Fatalf("call %d row %d: %.40q (len %d cap %d), want %.40q", i, j, r, len(r), cap(r), want[i][j])
			}
		}
	}
}
