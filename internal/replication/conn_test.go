package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestServerRejectsBadLines: each bad line gets its ERROR and a close, and
// the connection's close reason is named.
func TestServerRejectsBadLines(t *testing.T) {
	cases := []struct {
		name, line, wantErr, reason string
	}{
		{"wrong direction", `RDATA caches 1 ["x"]`, "ERROR invalid command: RDATA", CloseInvalidCommand},
		{"server only", "POSITION caches 1", "ERROR invalid command: POSITION", CloseInvalidCommand},
		{"unknown", "FOO bar", "ERROR invalid command: FOO", CloseInvalidCommand},
		{"unknown no args", "HELLO", "ERROR invalid command: HELLO", CloseInvalidCommand},
		{"lower case", "ping 1", "ERROR invalid command: ping", CloseInvalidCommand},
		{"no arguments", "REPLICATE", "ERROR failed to parse line for REPLICATE: expected <stream_name> <token>", CloseParseError},
		{"bad token", "REPLICATE caches soon", `ERROR failed to parse line for REPLICATE: token: "soon" is not an integer (or NOW)`, CloseParseError},
		{"bad state", "USER_SYNC @a:x idle 5", `ERROR failed to parse line for USER_SYNC: state "idle" is neither start nor end`, CloseParseError},
		{"NUL", "NAME a\x00b", "ERROR failed to parse line for NAME: line contains a NUL byte", CloseParseError},
		{"invalid UTF-8", "NAME \xc3\x28", "ERROR failed to parse line for NAME: line is not valid UTF-8", CloseParseError},
		{"unknown with bad bytes", "\xff\xfe x", `ERROR invalid command: \xff\xfe`, CloseInvalidCommand},
		{"too long", "PING " + strings.Repeat("x", DefaultMaxLineLength-4), "ERROR Line length exceeded", CloseLineTooLong},
		{"far too long", strings.Repeat("x", 200000), "ERROR Line length exceeded", CloseLineTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &recordingHandler{}
			_, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), h)
			r := dialRaw(t, addr)
			r.handshake("test.server")
			r.send(tc.line)
			got := r.expectClosed()
			if len(got) != 1 || got[0] != tc.wantErr {
				t.Fatalf("got %q, want [%q]", got, tc.wantErr)
			}
			waitFor(t, "ConnectionClosed", func() bool { return len(h.closeReasons()) == 1 })
			if r := h.closeReasons()[0]; r != tc.reason {
				t.Fatalf("close reason %q, want %q", r, tc.reason)
			}
		})
	}
}

// TestServerAcceptsLooseLines: blank lines are ignored, CRLF and a line of
// exactly the maximum length are accepted, and PING alone is a command.
func TestServerAcceptsLooseLines(t *testing.T) {
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	maxPing := "PING " + strings.Repeat("x", DefaultMaxLineLength-5)
	if len(maxPing) != DefaultMaxLineLength {
		t.Fatal("bad test line")
	}
	r.send("", "   ", "\t\r", "PING", maxPing+"\r", "NAME crlf-worker\r", "SYNC s1")
	waitFor(t, "SYNC handled", func() bool { return len(h.commands()) == 1 })
	if c := h.commands()[0]; c != (SyncCommand{Data: "s1"}) {
		t.Fatalf("handler got %#v", c)
	}
	// Established is a connection with no flush stuck for long; wait for
	// the replies' write to finish rather than catch it in flight.
	info := waitForConn(t, srv, "the queue drained", drained)
	if info.Name != "crlf-worker" {
		t.Fatalf("name %q", info.Name)
	}
	if info.CommandsIn[CmdPing] != 2 || info.CommandsIn[CmdName] != 1 || info.CommandsIn[CmdSync] != 1 {
		t.Fatalf("inbound counters %v", info.CommandsIn)
	}
	if info.State != ConnEstablished || info.State.String() != "established" {
		t.Fatalf("state %v", info.State)
	}
}

func TestConfigurableLineLimit(t *testing.T) {
	_, addr := startServer(t, ServerConfig{MaxLineLength: 30}, NewMemorySource("caches"), &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("PING 1234567890123456789012345")  // 30 bytes: fine
	r.send("PING 12345678901234567890123456") // 31 bytes
	got := r.expectClosed()
	if len(got) != 1 || got[0] != "ERROR Line length exceeded" {
		t.Fatalf("got %q", got)
	}
}

// TestOverLongSendsAreRefused: a command that would encode over the limit is
// never sent; the sender gets an error (and Publish skips such rows).
func TestOverLongSendsAreRefused(t *testing.T) {
	src := NewMemorySource("caches")
	srv, addr := startServer(t, ServerConfig{MaxLineLength: 100}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches NOW")
	r.expectLine("POSITION caches 0")
	waitForLive(t, srv, "caches")
	sc := srv.conns1(t)
	if err := sc.Send(ErrorCommand{Message: strings.Repeat("e", 100)}); err == nil || !strings.Contains(err.Error(), "line too long") {
		t.Fatalf("Send of an over-long ERROR: %v", err)
	}
	if err := sc.Send(NameCommand{ClientName: "x"}); err == nil {
		t.Fatal("a server sent NAME")
	}
	long := row(`["` + strings.Repeat("a", 100) + `"]`)
	// A batch whose last row is too long: the row before carries the token.
	srv.Publish(src.Append("caches", row(`["a"]`), row(`["b"]`), long))
	srv.Publish(src.Append("caches", long))
	srv.Publish(src.Append("caches", row(`["c"]`)))
	r.expectLine(`RDATA caches batch ["a"]`)
	r.expectLine(`RDATA caches 1 ["b"]`)
	r.expectLine(`RDATA caches 3 ["c"]`)
}

// conns1 returns the server's only connection.
func (s *Server) conns1(t *testing.T) *ServerConn {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(s.conns))
	}
	for sc := range s.conns {
		return sc
	}
	return nil
}

// TestHandlerGetsClientCommands: client commands with effects reach the
// Handler in order; a handler error goes back as ERROR and the connection
// stays open.
func TestHandlerGetsClientCommands(t *testing.T) {
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	lines := []string{
		"USER_SYNC @a:x start 1490197665618",
		"FEDERATION_ACK 7",
		"REMOVE_PUSHER m.http pk @a:x",
		`INVALIDATE_CACHE get_user_by_id ["@a:x"]`,
		`USER_IP @a:x ["tok", "1.2.3.4", "ua", null, 5]`,
		"ERROR worker unhappy",
	}
	r.send(lines...)
	waitFor(t, "commands", func() bool { return len(h.commands()) == len(lines) })
	for i, c := range h.commands() {
		out, _ := FormatCommand(c)
		if string(out) != lines[i] {
			t.Errorf("command %d: %q, want %q", i, out, lines[i])
		}
	}
	h.mu.Lock()
	h.err = fmt.Errorf("cannot remove pusher:\nnot found")
	h.mu.Unlock()
	r.send("REMOVE_PUSHER a b c")
	r.expectLine("ERROR cannot remove pusher: not found")
	r.send("PING 1")
	r.send("FEDERATION_ACK 8")
	r.expectLine("ERROR cannot remove pusher: not found") // still open, still answering
}

func TestServerWithoutHandlerAnswersError(t *testing.T) {
	_, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), nil)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("FEDERATION_ACK 1")
	r.expectLine("ERROR this server does not handle FEDERATION_ACK")
}

func TestShutdownSendsErrorToAll(t *testing.T) {
	src := NewMemorySource("caches")
	srv, err := NewServer(ServerConfig{ServerName: "s"}, src, &recordingHandler{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var rs []*rawClient
	for i := 0; i < 3; i++ {
		r := dialRaw(t, ln.Addr().String())
		r.handshake("s")
		rs = append(rs, r)
	}
	waitFor(t, "3 connections", func() bool { return len(srv.Connections()) == 3 })
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if got := r.expectClosed(); len(got) != 1 || got[0] != "ERROR server shutting down" {
			t.Fatalf("got %q", got)
		}
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if err := srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestSlowConsumerIsClosedFastOneUnaffected: a subscriber that does not read
// is closed with ERROR Failed to keep up; a reading one gets every row.
func TestSlowConsumerIsClosedFastOneUnaffected(t *testing.T) {
	src := NewMemorySource("caches")
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{MaxPendingCommands: 200, WriteTimeout: time.Minute}, src, h)
	slow := dialRaw(t, addr)
	slow.handshake("test.server")
	slow.send("NAME slow", "REPLICATE caches NOW")
	slow.expectLine("POSITION caches 0")
	waitForLive(t, srv, "caches")
	fast := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: addr, Name: "fast", Handler: fast, Streams: []StreamRequest{{Stream: "caches", Now: true}}})
	waitFor(t, "fast caught up", func() bool { return fast.caughtUpCount() == 1 })

	// Publish until the slow one is closing (its socket buffers fill).
	big := row(`["` + strings.Repeat("x", 8000) + `"]`)
	n := 0
	waitFor(t, "slow consumer detected", func() bool {
		for i := 0; i < 20; i++ {
			n++
			srv.Publish(src.Append("caches", big))
		}
		for _, c := range srv.Connections() {
			if c.Name == "slow" {
				return c.State == ConnClosing
			}
		}
		return true
	})
	got := slow.expectClosed()
	if len(got) == 0 || got[len(got)-1] != "ERROR Failed to keep up" {
		t.Fatalf("slow consumer's last line %q", got[max(0, len(got)-1):])
	}
	waitFor(t, "slow closed", func() bool { return slices.Contains(h.closeReasons(), CloseSlowConsumer) })
	waitFor(t, "fast got all", func() bool { return len(fast.rowTokens("caches")) == n })
	for i, tok := range fast.rowTokens("caches") {
		if tok != int64(i+1) {
			t.Fatalf("fast consumer row %d has token %d", i, tok)
		}
	}
}

func TestCoalesce(t *testing.T) {
	small := func(s string) outItem { return outItem{b: []byte(s), n: 1} }
	big := outItem{b: []byte(strings.Repeat("B", coalesceItemMax+1)), n: 1}
	items := []outItem{small("a\n"), small("b\n"), big, small("c\n"), small("d\n"), small("e\n")}
	scratch := make([]byte, 0, 5) // room for two small items and a half
	bufs := coalesce(nil, scratch, items)
	var all []byte
	for _, it := range items {
		all = append(all, it.b...)
	}
	if got := bytes.Join(bufs, nil); !bytes.Equal(got, all) {
		t.Fatalf("coalesced bytes differ: %q", got)
	}
	// "a\nb\n" fills the scratch; everything after goes as it is.
	if len(bufs) != 5 || string(bufs[0]) != "a\nb\n" || string(bufs[2]) != "c\n" {
		t.Fatalf("runs %q", bufs)
	}
	// Written items are never modified: coalescing copies.
	if string(items[0].b) != "a\n" {
		t.Fatal("item changed")
	}
}

// TestRepliesCountAgainstTheLimit: a client that provokes ERROR replies
// without reading them is closed as a slow consumer instead of growing the
// server's queue without bound.
func TestRepliesCountAgainstTheLimit(t *testing.T) {
	h := &recordingHandler{err: errors.New(strings.Repeat("no ", 4000))}
	srv, addr := startServer(t, ServerConfig{MaxPendingCommands: 50, WriteTimeout: time.Minute}, NewMemorySource("caches"), h)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	go func() {
		for i := 0; i < 5000; i++ {
			if _, err := r.nc.Write([]byte("FEDERATION_ACK 1\n")); err != nil {
				return // closed by the server, as wanted
			}
		}
	}()
	// Read nothing until the server has decided.
	waitFor(t, "closing", func() bool {
		c := srv.Connections()
		return len(c) == 0 || c[0].State == ConnClosing
	})
	got := r.expectClosed()
	if len(got) == 0 || got[len(got)-1] != "ERROR Failed to keep up" {
		t.Fatalf("last line %q", got[max(0, len(got)-1):])
	}
	waitFor(t, "reason", func() bool { return slices.Contains(h.closeReasons(), CloseSlowConsumer) })
}

// TestLongErrorTextIsCut: an ERROR the server writes itself (quoting a long
// cause) is cut to the line limit rather than sent over it.
func TestLongErrorTextIsCut(t *testing.T) {
	_, addr := startServer(t, ServerConfig{MaxLineLength: 40}, NewMemorySource("caches"), nil)
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE nosuchstream_é_é_é 0")
	got := r.expectClosed()
	if len(got) != 1 || len(got[0]) > 40 || !strings.HasPrefix(got[0], "ERROR failed to handle replicate: ") || !utf8.ValidString(got[0]) {
		t.Fatalf("got %q", got)
	}
}
