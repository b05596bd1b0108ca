package master

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/master/rows"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// This file wires the real parts: the Pebble stream log, the protocol
// server and the handler that turns client commands into effects.

var errServerClosed = replication.ErrServerClosed

// defaultValidator checks rows against the stream catalogue: the standard
// streams' row shapes and the custom streams' declared field counts.
func defaultValidator(cfg masterapi.Config) (RowValidator, error) {
	custom := make([]rows.Custom, len(cfg.CustomStreams))
	for i, c := range cfg.CustomStreams {
		custom[i] = rows.Custom{Name: c.Name, Fields: c.Fields}
	}
	cat, err := rows.NewCatalogue(cfg.Federation, custom)
	if err != nil {
		return nil, fmt.Errorf("build stream catalogue: %w", err)
	}
	return cat.ValidateFields, nil
}

// openLog opens the Pebble log with the configured streams and retention.
// The PostgreSQL log is opened before the master is built, by
// WaitForPostgresLog, which waits for the database; New refuses to open it
// itself.
func openLog(cfg masterapi.Config, logger logr.Logger, now func() time.Time) (StreamLog, error) {
	if cfg.Log.Backend == masterapi.LogPostgres {
		return nil, errors.New("open stream log: log.backend is postgres: open it with WaitForPostgresLog and pass it as Options.Log")
	}
	ret := map[string]streamlog.Retention{}
	for _, s := range cfg.Streams() {
		if r, ok := cfg.Retention[s]; ok {
			ret[s] = streamlog.Retention{MaxRows: r.MaxRows, MaxAge: r.MaxAge.Duration, MaxBytes: r.MaxBytes}
		}
	}
	def := cfg.Retention["*"]
	l, err := streamlog.Open(streamlog.Options{
		Dir:              cfg.DataDir,
		Ephemeral:        cfg.Ephemeral,
		Streams:          cfg.Streams(),
		Retention:        ret,
		DefaultRetention: streamlog.Retention{MaxRows: def.MaxRows, MaxAge: def.MaxAge.Duration, MaxBytes: def.MaxBytes},
		TrimInterval:     cfg.RetentionInterval.Duration,
		MaxLineLength:    cfg.Limits.MaxLineLength,
		MemTableSize:     uint64(cfg.Storage.MemTableBytes),
		CacheSize:        cfg.Storage.BlockCacheBytes,
		TailCacheBytes:   cfg.Storage.TailCacheBytes,
		Now:              now,
		Logger:           logger.WithName("streamlog"),
	})
	if err != nil {
		return nil, fmt.Errorf("open stream log in %q (check that the data dir exists, is writable and is not used by another master): %w", cfg.DataDir, err)
	}
	return l, nil
}

// newReplicationServer builds the protocol server over the log, with the
// master's effects as its command handler.
func newReplicationServer(cfg masterapi.Config, src replication.Source, effects *Effects, reg prometheus.Registerer, logger logr.Logger) (ReplicationServer, error) {
	srv, err := replication.NewServer(replication.ServerConfig{
		ServerName:         cfg.ServerName,
		MaxLineLength:      cfg.Limits.MaxLineLength,
		MaxPendingCommands: cfg.Limits.MaxPendingCommands,
		MaxPendingBytes:    cfg.Limits.MaxPendingBytes,
		MaxCatchUpBytes:    cfg.Limits.MaxCatchUpBytes,
		WriteTimeout:       cfg.Limits.WriteTimeout.Duration,
		PingInterval:       cfg.Limits.PingInterval.Duration,
		PingTimeout:        cfg.Limits.PingTimeout.Duration,
		MaxConnections:     cfg.Limits.MaxConnections,
		IdentifyTimeout:    cfg.Limits.IdentifyTimeout.Duration,
		MaxNameLength:      cfg.Limits.MaxNameLength,
		IdentifyPeer:       identifyPeer,
		Authorizer:         newAccessPolicy(cfg),
		Logger:             logger,
		Registerer:         reg,
	}, src, commandHandler{effects})
	if err != nil {
		return nil, err
	}
	return serverAdapter{srv}, nil
}

// serverAdapter presents replication.Server's connection table in the
// master's terms.
type serverAdapter struct{ *replication.Server }

func (s serverAdapter) Serve(ln net.Listener) error        { return s.Server.Serve(ln) }
func (s serverAdapter) Shutdown(ctx context.Context) error { return s.Server.Shutdown(ctx) }

func (s serverAdapter) Connections() []ConnInfo {
	conns := s.Server.Connections()
	out := make([]ConnInfo, len(conns))
	for i, c := range conns {
		subs := make([]SubInfo, len(c.Subscriptions))
		for j, sub := range c.Subscriptions {
			subs[j] = SubInfo{Stream: sub.Stream, State: sub.State, LastToken: sub.LastToken}
		}
		out[i] = ConnInfo{
			ID: c.ID, Name: c.Name, RemoteAddr: c.RemoteAddr, State: c.State.String(),
			Identity: c.Peer.Identity, Transport: c.Peer.Transport,
			ConnectedSince: c.ConnectedSince, Subscriptions: subs,
			PendingCmds: c.PendingCommands, PendingBytes: c.PendingBytes,
			CommandsIn: c.CommandsIn, CommandsOut: c.CommandsOut,
			BytesIn: c.BytesIn, BytesOut: c.BytesOut, LastReceived: c.LastReceived,
		}
	}
	return out
}

// commandHandler dispatches client commands to the master's effects. An
// error it returns is sent to the client as ERROR; the connection stays up.
type commandHandler struct{ e *Effects }

func (h commandHandler) HandleCommand(conn *replication.ServerConn, cmd replication.Command) error {
	switch c := cmd.(type) {
	case replication.UserSyncCommand:
		return h.e.UserSync(conn.ID(), c.UserID, c.Active, c.LastSyncMS)
	case replication.FederationAckCommand:
		return h.e.FederationAck(c.Token)
	case replication.RemovePusherCommand:
		return h.e.RemovePusher(c.AppID, c.PushKey, c.UserID)
	case replication.InvalidateCacheCommand:
		return h.e.InvalidateCache(c.CacheFunc, c.Keys)
	case replication.UserIPCommand:
		h.e.UserIP(c.UserID, c.IP, c.UserAgent, c.DeviceID, c.LastSeen)
		return nil
	case replication.SyncCommand:
		// SYNC is the protocol's test aid: echoing it after every earlier
		// command of the connection has had its effect gives a client a
		// barrier to wait on.
		return conn.Send(c)
	case replication.ErrorCommand:
		// The server has logged it; there is nothing to undo.
		return nil
	}
	return fmt.Errorf("command %s is not handled by this master", cmd.Name())
}

func (h commandHandler) ConnectionClosed(conn *replication.ServerConn, _ string) {
	h.e.ConnectionClosed(conn.ID())
}
