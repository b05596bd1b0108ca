package replication

import (
	"errors"
	"time"
)

// LiveSettings are the ServerConfig settings a running server can change
// (a master's config reload). Zero values take the defaults, as in
// ServerConfig; zero bounds mean unbounded.
type LiveSettings struct {
	// The keep-alive applies to every connection at its next tick.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Settings of one connection's queue, fixed when it connects: they
	// apply to connections accepted after SetLive, while connections
	// already up keep theirs (lowering a limit under a queue that is
	// already longer would drop that connection).
	MaxPendingCommands int
	MaxPendingBytes    int
	WriteTimeout       time.Duration
	// Server-wide bounds and the access policy, which apply at once: to
	// the next connection accepted, NAME received, command with effects
	// and REPLICATE. Connections over a lowered MaxConnections stay.
	MaxConnections  int
	IdentifyTimeout time.Duration
	MaxNameLength   int
	Authorizer      Authorizer
}

// liveState is what SetLive changes, swapped whole so that a connection
// sees one consistent set.
type liveState struct {
	connCfg         connConfig
	maxConnections  int
	identifyTimeout time.Duration
	maxNameLength   int
	authorizer      Authorizer
}

// Live returns the server's current live settings, defaults filled in.
func (s *Server) Live() LiveSettings {
	st := s.live.Load()
	return LiveSettings{
		MaxPendingCommands: st.connCfg.limits.cmds,
		MaxPendingBytes:    st.connCfg.limits.bytes,
		WriteTimeout:       st.connCfg.writeTimeout,
		PingInterval:       st.connCfg.pingInterval,
		PingTimeout:        st.connCfg.pingTimeout,
		MaxConnections:     st.maxConnections,
		IdentifyTimeout:    st.identifyTimeout,
		MaxNameLength:      st.maxNameLength,
		Authorizer:         st.authorizer,
	}
}

// SetLive changes the live settings of a running server. A keep-alive that
// would time out every idle peer (PingTimeout not longer than PingInterval)
// or a negative bound is refused and nothing changes.
func (s *Server) SetLive(ls LiveSettings) error {
	if ls.MaxPendingCommands <= 0 {
		ls.MaxPendingCommands = DefaultMaxPendingCommands
	}
	if ls.MaxPendingBytes <= 0 {
		ls.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if ls.WriteTimeout <= 0 {
		ls.WriteTimeout = DefaultWriteTimeout
	}
	if ls.PingInterval <= 0 {
		ls.PingInterval = DefaultPingInterval
	}
	if ls.PingTimeout <= 0 {
		ls.PingTimeout = DefaultPingTimeout
	}
	switch {
	case ls.PingTimeout <= ls.PingInterval:
		return errors.New("replication: live settings: PingTimeout must be longer than PingInterval, or every idle peer times out")
	case ls.MaxConnections < 0 || ls.IdentifyTimeout < 0 || ls.MaxNameLength < 0:
		return errors.New("replication: live settings: MaxConnections, IdentifyTimeout and MaxNameLength must not be negative (0 is unbounded)")
	}
	s.storeLive(ls)
	return nil
}

// storeLive installs settings already checked, with defaults filled in.
func (s *Server) storeLive(ls LiveSettings) {
	cc := s.baseConnCfg
	cc.limits = queueLimits{cmds: ls.MaxPendingCommands, bytes: ls.MaxPendingBytes}
	cc.writeTimeout = ls.WriteTimeout
	cc.pingInterval = ls.PingInterval
	cc.pingTimeout = ls.PingTimeout
	cc.liveKeepAlive = s.liveKeepAlive
	s.live.Store(&liveState{
		connCfg:         cc,
		maxConnections:  ls.MaxConnections,
		identifyTimeout: ls.IdentifyTimeout,
		maxNameLength:   ls.MaxNameLength,
		authorizer:      ls.Authorizer,
	})
}

// liveKeepAlive is every server connection's keep-alive source.
func (s *Server) liveKeepAlive() (interval, timeout time.Duration) {
	cc := &s.live.Load().connCfg
	return cc.pingInterval, cc.pingTimeout
}
