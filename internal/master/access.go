package master

import (
	"fmt"
	"slices"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// accessPolicy is the replication.Authorizer of access.rules (see
// masterapi.Access for the defaults without rules).
type accessPolicy struct {
	rules []masterapi.AccessRule
	// identified: client certificates are checked, so a client without
	// one is unauthenticated rather than trusted as in 2020.
	identified bool
}

func newAccessPolicy(cfg masterapi.Config) replication.Authorizer {
	if len(cfg.Access.Rules) == 0 && cfg.TLS.ClientCAFile == "" {
		return nil // the 2020 protocol: everything allowed
	}
	return accessPolicy{rules: cfg.Access.Rules, identified: cfg.TLS.ClientCAFile != ""}
}

func (a accessPolicy) AuthorizeCommand(p replication.Peer, command string) error {
	if a.allows(p, func(r masterapi.AccessRule) []string { return r.Commands }, command) {
		return nil
	}
	return fmt.Errorf("%s refused: client %s may not send it (access.rules)", command, p)
}

func (a accessPolicy) AuthorizeStream(p replication.Peer, stream string) error {
	if a.allows(p, func(r masterapi.AccessRule) []string { return r.Streams }, stream) {
		return nil
	}
	return fmt.Errorf("REPLICATE refused for stream %s: client %s may not read it (access.rules)", stream, p)
}

// allows applies the rules, or without rules the default: authenticated
// clients may do everything, unauthenticated ones nothing.
func (a accessPolicy) allows(p replication.Peer, grants func(masterapi.AccessRule) []string, what string) bool {
	if len(a.rules) == 0 {
		return p.Authenticated
	}
	for _, r := range a.rules {
		if !ruleMatches(r.Identity, p) {
			continue
		}
		if g := grants(r); slices.Contains(g, "*") || slices.Contains(g, what) {
			return true
		}
	}
	return false
}

func ruleMatches(identity string, p replication.Peer) bool {
	switch identity {
	case masterapi.IdentityUnauthenticated:
		return !p.Authenticated
	case masterapi.IdentityAnyAuthenticated:
		return p.Authenticated
	}
	return p.Authenticated && p.Identity == identity
}
