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

	// A connection made now gets the new queue limit; the one made before
	// keeps its own. Both follow the new keep-alive.
	waitFor(t, "first connection gone", func() bool { return len(srv.Connections()) == 1 })
	fourth := dialRaw(t, addr)
	fourth.handshake("test.server")
	waitFor(t, "fourth connection", func() bool { return len(srv.Connections()) == 2 })
	conns := serverConns(srv)
	for i, sc := range conns {
		if iv, to := sc.c.keepAlive(); iv != 2*time.Hour || to != 3*time.Hour {
			t.Errorf("connection %d: keep-alive %s/%s, want 2h/3h", i, iv, to)
		}
	}
	if old, fresh := conns[0].c.cfg.limits.cmds, conns[1].c.cfg.limits.cmds; old != DefaultMaxPendingCommands || fresh != 50 {
		t.Errorf("queue limits: connection made before SetLive %d, after %d; want %d and 50", old, fresh, DefaultMaxPendingCommands)
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

// TestSetLiveKeepAliveReachesConnectionsAlreadyUp: a connection made with
// the default keep-alive (5 s / 25 s) follows a SetLive to 2 s / 10 s from
// its next tick: it pings every 2 s and times out a peer silent for 10 s.
func TestSetLiveKeepAliveReachesConnectionsAlreadyUp(t *testing.T) {
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
	if err := srv.SetLive(LiveSettings{PingInterval: 2 * time.Second, PingTimeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second) // the old ticker's tick: the loop switches
	r.expectPing(clock)
	for range 2 { // 7 s, 9 s: silent for less than 10 s
		clock.Advance(2 * time.Second)
		r.expectPing(clock)
	}
	clock.Advance(2 * time.Second) // 11 s: over the new timeout, far under the old one
	r.expectPing(clock)
	if got := r.expectClosed(); len(got) != 1 || got[0] != "ERROR ping timeout" {
		t.Fatalf("got %q, want ERROR ping timeout after 11 s under a 10 s timeout", got)
	}
}
