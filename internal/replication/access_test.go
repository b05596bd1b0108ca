package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

// streamPolicy lets the peer named "reader" read only "caches" and send
// only USER_SYNC; everyone else may do nothing.
type streamPolicy struct{}

func (streamPolicy) AuthorizeCommand(p Peer, cmd string) error {
	if p.Identity == "reader" && cmd == CmdUserSync {
		return nil
	}
	return fmt.Errorf("%s refused for %s", cmd, p)
}

func (streamPolicy) AuthorizeStream(p Peer, stream string) error {
	if p.Identity == "reader" && stream == "caches" {
		return nil
	}
	return fmt.Errorf("REPLICATE refused for stream %s: client %s may not read it", stream, p)
}

// identifyAs gives every peer the same authenticated identity: a stand-in
// for a TLS handshake with a client certificate.
func identifyAs(name string) IdentifyPeer {
	return func(context.Context, net.Conn) (Peer, error) {
		return Peer{Identity: name, Authenticated: true, Transport: "test"}, nil
	}
}

func TestAuthorizerRefusesStreamsAndCommands(t *testing.T) {
	src := NewMemorySource("caches", "events")
	src.Append("caches", cacheRow(1))
	src.Append("events", row(`["e"]`))
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{ServerName: "hs", IdentifyPeer: identifyAs("reader"), Authorizer: streamPolicy{}}, src, h)

	c := dialRaw(t, addr)
	c.handshake("hs")
	c.send("REPLICATE events 0")
	c.expectLine("ERROR REPLICATE refused for stream events: client reader may not read it")
	c.send("REPLICATE ALL NOW")
	c.expectLine("ERROR REPLICATE refused for stream events: client reader may not read it")
	c.expectLine("POSITION caches 1")
	c.send("FEDERATION_ACK 1")
	c.expectLine("ERROR FEDERATION_ACK refused for reader")
	c.send("USER_SYNC @a:x start 1")
	conn := waitForConn(t, srv, "USER_SYNC handled and caches subscribed", func(ci ConnectionInfo) bool {
		return len(ci.Subscriptions) == 1 && h.commandCount() == 1
	})
	if conn.Subscriptions[0].Stream != "caches" || conn.Peer.Identity != "reader" {
		t.Fatalf("connection %+v", conn)
	}
	if cmds := h.commands(); cmds[0].Name() != CmdUserSync {
		t.Fatalf("handler got %v, want only the allowed USER_SYNC", cmds)
	}
}

func TestIdentifyPeerFailureClosesTheConnection(t *testing.T) {
	h := &recordingHandler{}
	_, addr := startServer(t, ServerConfig{ServerName: "hs", IdentifyPeer: func(context.Context, net.Conn) (Peer, error) {
		return Peer{}, errors.New("bad handshake")
	}}, NewMemorySource("caches"), h)
	c := dialRaw(t, addr)
	if got := c.expectClosed(); len(got) != 0 {
		t.Fatalf("an unidentified client got %q", got)
	}
	waitFor(t, "close reported", func() bool {
		r := h.closeReasons()
		return len(r) == 1 && r[0] == CloseIdentifyFailed
	})
}

func TestPeerString(t *testing.T) {
	if s := (Peer{Identity: "x", Authenticated: true}).String(); s != "x" {
		t.Fatal(s)
	}
	if s := (Peer{Identity: "x"}).String(); !strings.Contains(s, "unauthenticated") {
		t.Fatal(s)
	}
}

func (h *recordingHandler) commandCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.cmds)
}
