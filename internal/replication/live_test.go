package replication

import (
	"strings"
	"testing"
	"time"
)

// TestSetLive: live settings change a running server without dropping
// anyone. Server-wide bounds apply to the next connection or NAME; the
// settings of one connection apply to connections made after the change.
func TestSetLive(t *testing.T) {
	src := NewMemorySource("caches")
	srv, addr := startServer(t, ServerConfig{PingInterval: time.Hour, PingTimeout: 2 * time.Hour}, src, &recordingHandler{})
	first := dialRaw(t, addr)
	first.handshake("test.server")
	second := dialRaw(t, addr)
	second.handshake("test.server")
	waitFor(t, "two connections", func() bool { return len(srv.Connections()) == 2 })

	if err := srv.SetLive(LiveSettings{PingInterval: 2 * time.Hour, PingTimeout: 3 * time.Hour, MaxConnections: 2, MaxNameLength: 16, MaxPendingCommands: 50}); err != nil {
		t.Fatal(err)
	}
	if got := srv.Live(); got.MaxPendingBytes != DefaultMaxPendingBytes || got.WriteTimeout != DefaultWriteTimeout || got.MaxConnections != 2 {
		t.Fatalf("Live() = %+v, want defaults for unset settings", got)
	}

	// A third connection is over the new bound; the two already up stay.
	third := dialRaw(t, addr)
	if lines := third.expectClosed(); len(lines) != 1 || !strings.HasPrefix(lines[0], "ERROR too many connections") {
		t.Fatalf("third connection got %q, want one ERROR too many connections", lines)
	}
	// The new name bound applies to a connection already up.
	first.send("NAME " + strings.Repeat("n", 17))
	if lines := first.expectClosed(); len(lines) != 1 || !strings.Contains(lines[0], "limits.maxNameLength") {
		t.Fatalf("long NAME got %q, want an ERROR naming limits.maxNameLength", lines)
	}
	second.send("NAME short")
	waitForConn(t, srv, "the second connection named", func(c ConnectionInfo) bool { return c.Name == "short" })

	// A connection made now gets the new keep-alive and queue limit; the
	// one made before keeps its own.
	waitFor(t, "first connection gone", func() bool { return len(srv.Connections()) == 1 })
	fourth := dialRaw(t, addr)
	fourth.handshake("test.server")
	waitFor(t, "fourth connection", func() bool { return len(srv.Connections()) == 2 })
	conns := serverConns(srv)
	old, fresh := conns[0].c.cfg, conns[1].c.cfg
	if old.pingInterval != time.Hour || old.limits.cmds != DefaultMaxPendingCommands {
		t.Errorf("connection made before SetLive: ping %s, queue %d; want its own 1h and %d", old.pingInterval, old.limits.cmds, DefaultMaxPendingCommands)
	}
	if fresh.pingInterval != 2*time.Hour || fresh.pingTimeout != 3*time.Hour || fresh.limits.cmds != 50 {
		t.Errorf("connection made after SetLive: ping %s/%s, queue %d; want 2h/3h and 50", fresh.pingInterval, fresh.pingTimeout, fresh.limits.cmds)
	}
}

func TestSetLiveRefusesBadSettings(t *testing.T) {
	srv, _ := startServer(t, ServerConfig{MaxConnections: 7}, NewMemorySource("caches"), nil)
	for name, ls := range map[string]LiveSettings{
		"timeout not longer than interval": {PingInterval: 10 * time.Second, PingTimeout: 10 * time.Second},
		"default timeout under interval":   {PingInterval: time.Minute},
		"negative connections":             {MaxConnections: -1},
		"negative identify timeout":        {IdentifyTimeout: -time.Second},
		"negative name length":             {MaxNameLength: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if err := srv.SetLive(ls); err == nil {
				t.Fatal("SetLive accepted it")
			}
			if got := srv.Live().MaxConnections; got != 7 {
				t.Fatalf("MaxConnections %d after a refused SetLive, want 7 unchanged", got)
			}
		})
	}
}
