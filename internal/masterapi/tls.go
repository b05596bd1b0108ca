package masterapi

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// ReadTokenEnv names the environment variable that may carry the read
// token when access.readTokenFile is not set.
const ReadTokenEnv = "TCPREPL_READ_TOKEN"

// Client authentication modes of TLS.ClientAuth.
const (
	ClientAuthRequire  = "require"
	ClientAuthOptional = "optional"
)

// Identities with a meaning in access rules.
const (
	// IdentityAnyAuthenticated matches every client with a verified
	// certificate.
	IdentityAnyAuthenticated = "*"
	// IdentityUnauthenticated matches clients without a verified
	// certificate: plaintext peers and TLS peers that sent none.
	IdentityUnauthenticated = "unauthenticated"
)

// TLS configures TLS on the replication and HTTP listeners. Empty CertFile
// means no TLS (the 2020 protocol, plaintext).
type TLS struct {
	// CertFile and KeyFile are the server's PEM certificate (chain) and
	// key. They are re-read when they change (a Secret update), without a
	// restart.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// ClientCAFile holds the CAs client certificates must chain to. When
	// set, replication clients are identified by their certificate.
	ClientCAFile string `json:"clientCAFile,omitempty"`
	// ClientAuth is "require" (default with clientCAFile: a TLS client
	// without a valid certificate fails the handshake) or "optional" (it
	// connects unauthenticated).
	ClientAuth string `json:"clientAuth,omitempty"`
	// PlaintextReplicationListen, when set, also serves the replication
	// protocol without TLS on this address, for Synapse 2020 peers. Off by
	// default: its clients are unauthenticated.
	PlaintextReplicationListen string `json:"plaintextReplicationListen,omitempty"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// ClientAuthRequired reports whether a TLS client must present a valid
// certificate.
func (t TLS) ClientAuthRequired() bool {
	return t.ClientCAFile != "" && (t.ClientAuth == "" || t.ClientAuth == ClientAuthRequire)
}

// AccessRule grants one client identity commands and streams. Rules add up:
// a client may do what any rule matching it allows.
type AccessRule struct {
	// Identity is a client certificate's identity (its subject CN, else
	// its first DNS SAN, else its first URI SAN), "*" for any
	// authenticated client, or "unauthenticated".
	Identity string `json:"identity"`
	// Commands are the commands with effects it may send (FEDERATION_ACK,
	// REMOVE_PUSHER, USER_SYNC, USER_IP, INVALIDATE_CACHE), or "*".
	Commands []string `json:"commands,omitempty"`
	// Streams are the streams it may REPLICATE, or "*".
	Streams []string `json:"streams,omitempty"`
}

// Access configures who may do what on the replication port, and the token
// of the HTTP read endpoints that expose personal data.
type Access struct {
	// Rules, when any is given, allow only what they grant. With no rules
	// everything is allowed, as in the 2020 protocol, except that once
	// tls.clientCAFile is set unauthenticated clients may do nothing but
	// connect (NAME, PING, SYNC).
	Rules []AccessRule `json:"rules,omitempty"`
	// ReadTokenFile holds the bearer token of GET /v1/userips (the publish
	// token is accepted too). When empty TCPREPL_READ_TOKEN is used if set.
	ReadTokenFile string `json:"readTokenFile,omitempty"`
}

// validateTLSAccess reports bad tls and access settings.
func (c Config) validateTLSAccess(bad func(format string, args ...any)) {
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("tls: certFile and keyFile go together: give both (PEM certificate and key) or neither")
	}
	if !t.Enabled() && (t.ClientCAFile != "" || t.ClientAuth != "" || t.PlaintextReplicationListen != "") {
		bad("tls: clientCAFile, clientAuth and plaintextReplicationListen need TLS: set tls.certFile and tls.keyFile")
	}
	switch t.ClientAuth {
	case "", ClientAuthRequire, ClientAuthOptional:
	default:
		bad("tls.clientAuth %q: use %q or %q", t.ClientAuth, ClientAuthRequire, ClientAuthOptional)
	}
	if t.ClientAuth != "" && t.ClientCAFile == "" {
		bad("tls.clientAuth %q needs tls.clientCAFile, the CAs client certificates are checked against", t.ClientAuth)
	}
	if p := t.PlaintextReplicationListen; p != "" && (p == c.ReplicationListen || p == c.HTTPListen) {
		bad("tls.plaintextReplicationListen %q must differ from replicationListen and httpListen", p)
	}
	streams := c.Streams()
	for i, r := range c.Access.Rules {
		switch {
		case strings.TrimSpace(r.Identity) == "":
			bad("access.rules[%d]: identity is required (a certificate identity, %q or %q)", i, IdentityAnyAuthenticated, IdentityUnauthenticated)
		case r.Identity != IdentityUnauthenticated && t.ClientCAFile == "":
			bad("access.rules[%d]: identity %q can never match: clients are identified only when tls.clientCAFile is set", i, r.Identity)
		}
		for _, cmd := range r.Commands {
			if cmd != "*" && !slices.Contains(replication.EffectCommands, cmd) {
				bad("access.rules[%d]: command %q: use one of %s or \"*\"", i, cmd, strings.Join(replication.EffectCommands, ", "))
			}
		}
		for _, s := range r.Streams {
			if s != "*" && !slices.Contains(streams, s) {
				bad("access.rules[%d]: stream %q: no such stream (standard, custom, or federation when enabled); use \"*\" for all", i, s)
			}
		}
	}
}

// ReadToken reads the token of the HTTP read endpoints: from
// access.readTokenFile when set, else from TCPREPL_READ_TOKEN. Empty means
// only the publish token opens them.
func (c Config) ReadToken() (string, error) {
	if f := c.Access.ReadTokenFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read access.readTokenFile: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("read token file %s is empty: put the token in it or remove access.readTokenFile", f)
		}
		return tok, nil
	}
	return strings.TrimSpace(os.Getenv(ReadTokenEnv)), nil
}
