package replication

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Peer is who a connection's client is, as the listener established it
// (for example from a TLS client certificate). The engine never looks at
// certificates: it is handed a Peer and asks the Authorizer about it.
type Peer struct {
	// Identity names an authenticated client; empty when Authenticated is
	// false.
	Identity string
	// Authenticated is true when the transport proved Identity (a verified
	// client certificate).
	Authenticated bool
	// Transport says how the client is connected, e.g. "tls" or "plaintext";
	// shown in the connection table and logs.
	Transport string
}

// String is the identity for messages: the name, or "unauthenticated".
func (p Peer) String() string {
	if !p.Authenticated {
		return "unauthenticated"
	}
	return p.Identity
}

// EffectCommands are the client commands with effects on the master (or on
// other clients), the ones an Authorizer is asked about.
var EffectCommands = []string{CmdFederationAck, CmdRemovePusher, CmdUserSync, CmdUserIP, CmdInvalidateCache}

// Authorizer decides what a peer may do. Both methods are called on the
// connection's read loop and must be fast; a non-nil error is refused, its
// text sent to the client as "ERROR <text>".
type Authorizer interface {
	// AuthorizeCommand is asked for each command in EffectCommands.
	AuthorizeCommand(p Peer, command string) error
	// AuthorizeStream is asked for each stream a REPLICATE would subscribe.
	AuthorizeStream(p Peer, stream string) error
}

// IdentifyPeer is called once per accepted connection, on the connection's
// own goroutine before anything is sent or read, so a TLS handshake it runs
// does not hold the accept loop (the listener hands over a *tls.Conn whose
// handshake has not run). ctx ends when the connection is closed (shutdown,
// limits.identifyTimeout). An error closes the connection without a word:
// for TLS, the handshake has already told the client why.
type IdentifyPeer func(ctx context.Context, nc net.Conn) (Peer, error)

// Close reason of a connection whose identification failed.
const CloseIdentifyFailed = "identify_failed"

// authorizeCommand refuses a command with effects the peer may not send.
func (sc *ServerConn) authorizeCommand(name string) error {
	a := sc.s.live.Load().authorizer
	if a == nil || !slices.Contains(EffectCommands, name) {
		return nil
	}
	return a.AuthorizeCommand(sc.Peer(), name)
}

// allowedStreams filters the streams of a REPLICATE: it returns those the
// peer may read and, when some were refused, the error to send.
func (sc *ServerConn) allowedStreams(streams []string) ([]string, error) {
	a := sc.s.live.Load().authorizer
	if a == nil {
		return streams, nil
	}
	allowed := streams[:0:0]
	var refused []string
	var firstErr error
	for _, s := range streams {
		if err := a.AuthorizeStream(sc.Peer(), s); err != nil {
			refused = append(refused, s)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		allowed = append(allowed, s)
	}
	switch {
	case len(refused) == 0:
		return allowed, nil
	case len(refused) == 1:
		return allowed, firstErr
	default:
		return allowed, fmt.Errorf("REPLICATE refused for streams %s: client %s may not read them", strings.Join(refused, ","), sc.Peer())
	}
}

// Peer is who the client is, as the listener established it.
func (sc *ServerConn) Peer() Peer {
	if p := sc.peer.Load(); p != nil {
		return *p
	}
	return Peer{Transport: "plaintext"}
}

// replicate subscribes the streams of a REPLICATE the peer may read. A
// refused stream gets an ERROR naming it and the peer; the connection stays
// open, and with ALL the allowed streams are still subscribed.
func (sc *ServerConn) replicate(cmd ReplicateCommand) error {
	streams := []string{cmd.Stream}
	if cmd.Stream == ReplicateAll {
		streams = sc.s.src.Streams()
	}
	streams, refused := sc.allowedStreams(streams)
	if refused != nil {
		sc.s.log.V(1).Info("refused a REPLICATE", "conn", sc.ID(), "name", sc.Name(), "peer", sc.Peer().String(), "request", cmd.Stream, "error", refused.Error())
		if err := sc.Send(ErrorCommand{Message: string(sanitizeText(refused.Error()))}); err != nil {
			return err
		}
	}
	if len(streams) > 0 {
		sc.startReplicate(cmd, streams)
	}
	return nil
}
