package replication

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Issue 11 item 9: what an unauthenticated client controls is bounded.
func TestMaxConnections(t *testing.T) {
	srv, addr := startServer(t, ServerConfig{MaxConnections: 2}, NewMemorySource("caches"), nil)
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.handshake("test.server")
	b.handshake("test.server")
	waitFor(t, "two connections", func() bool { return len(srv.Connections()) == 2 })
	c := dialRaw(t, addr)
	if got := c.expectClosed(); len(got) != 1 || got[0] != "ERROR too many connections: this server accepts at most 2 (limits.maxConnections)" {
		t.Fatalf("connection over the limit got %q, want one ERROR naming the limit, then close", got)
	}
	// The connections within the limit are unaffected, and a slot freed
	// is a slot available.
	a.send("SYNC x")
	a.nc.Close()
	waitFor(t, "one connection left", func() bool { return len(srv.Connections()) == 1 })
	d := dialRaw(t, addr)
	d.handshake("test.server")
	b.send("NAME b", "REPLICATE caches NOW")
	b.expectLine("POSITION caches 0")
}

func TestIdentifyTimeout(t *testing.T) {
	srv, addr := startServer(t, ServerConfig{IdentifyTimeout: 200 * time.Millisecond}, NewMemorySource("caches"), nil)
	named := dialRaw(t, addr)
	named.handshake("test.server")
	named.send("NAME worker")
	subscribed := dialRaw(t, addr)
	subscribed.handshake("test.server")
	subscribed.send("REPLICATE caches NOW")
	subscribed.expectLine("POSITION caches 0")
	silent := dialRaw(t, addr)
	silent.handshake("test.server")
	silent.send("PING 1") // a PING is not an identity
	if got := silent.expectClosed(); len(got) != 1 || !strings.HasPrefix(got[0], "ERROR no NAME or REPLICATE within 200ms") {
		t.Fatalf("silent connection got %q, want ERROR naming the timeout, then close", got)
	}
	// The silent one connected last, so the others' timers have run out
	// too: they are still served.
	waitFor(t, "silent connection gone", func() bool { return len(srv.Connections()) == 2 })
	for _, c := range []*rawClient{named, subscribed} {
		c.send("REPLICATE caches NOW")
		c.expectLine("POSITION caches 0")
	}
}

func TestNameTooLong(t *testing.T) {
	_, addr := startServer(t, ServerConfig{MaxNameLength: 16}, NewMemorySource("caches"), nil)
	ok := dialRaw(t, addr)
	ok.handshake("test.server")
	ok.send("NAME "+strings.Repeat("a", 16), "REPLICATE caches NOW")
	ok.expectLine("POSITION caches 0")
	long := dialRaw(t, addr)
	long.handshake("test.server")
	long.send("NAME " + strings.Repeat("a", 17))
	if got := long.expectClosed(); len(got) != 1 || got[0] != "ERROR NAME is 17 bytes, the limit is 16 (limits.maxNameLength)" {
		t.Fatalf("long NAME got %q", got)
	}
}

func TestMetricNameLabelsAreBounded(t *testing.T) {
	var names []string
	for i := range 3 * MaxMetricNames {
		names = append(names, strings.Repeat("x", 1000)+string(rune('a'+i%26))+"\x01"+strings.Repeat("y", i))
	}
	names = append(names, "anon", "synapse.app.generic_worker")
	labels := MetricNameLabels(names)
	distinct := map[string]bool{}
	for _, n := range names {
		l := labels[n]
		if len(l) > MaxMetricNameLength || strings.ContainsAny(l, "\x01\"\\\n") {
			t.Fatalf("label %q of %q is not sanitised", l, n)
		}
		distinct[l] = true
	}
	if len(distinct) > MaxMetricNames+1 {
		t.Fatalf("%d distinct labels, want at most %d", len(distinct), MaxMetricNames+1)
	}
	if labels["synapse.app.generic_worker"] != "synapse.app.generic_worker" || labels["anon"] != "anon" {
		t.Fatalf("ordinary names changed: %q %q", labels["synapse.app.generic_worker"], labels["anon"])
	}
}

// identitySource is a MemorySource whose log has an identity.
type identitySource struct {
	*MemorySource
	id string
}

func (s identitySource) LogID() string { return s.id }

// The log-id extension: only a client that asks is told, before any RDATA
// or POSITION; a client that does not ask sees the 2020 protocol exactly.
func TestLogIDOnlyToClientsThatAsk(t *testing.T) {
	src := identitySource{NewMemorySource("caches"), "0123456789abcdef0123456789abcdef"}
	src.Append("caches", cacheRow(1))
	_, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})

	synapse := dialRaw(t, addr) // what a 2020 Synapse worker sends
	synapse.handshake("test.server")
	synapse.send("NAME synapse.app.generic_worker", "PING 1", "REPLICATE caches 0")
	synapse.expectLine("RDATA caches 1 " + string(cacheRow(1)))
	synapse.expectLine("POSITION caches 1")

	asks := dialRaw(t, addr)
	asks.handshake("test.server")
	asks.send("NAME w", "PING 1", "SYNC "+LogIDRequest, "REPLICATE caches 0")
	asks.expectLine("SYNC " + LogIDReplyPrefix + src.id)
	asks.expectLine("RDATA caches 1 " + string(cacheRow(1)))
	asks.expectLine("POSITION caches 1")
}

// A client whose OnLogID refuses the log stops, before handling any row,
// with ErrLogChanged; Run returns it instead of reconnecting.
func TestClientRefusesAnotherLog(t *testing.T) {
	src := identitySource{NewMemorySource("caches"), "ffffffffffffffffffffffffffffffff"}
	for i := 1; i <= 8; i++ {
		src.Append("caches", cacheRow(i))
	}
	_, addr := startServer(t, ServerConfig{}, src, nil)
	h := newRecordingClientHandler()
	c, err := NewClient(ClientConfig{
		Address: addr, Handler: h, Streams: []StreamRequest{{Stream: "caches", Token: 5}},
		OnLogID: func(id string) error {
			if id != "00000000000000000000000000000000" {
				return ErrLogChanged
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(t.Context()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrLogChanged) {
			t.Fatalf("Run = %v, want ErrLogChanged", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client kept running against another log")
	}
	if got := h.rowTokens("caches"); len(got) != 0 {
		t.Fatalf("rows of the other log were handled: %v", got)
	}
}

// Against a 2020 Synapse master, which closes a connection that sends SYNC
// ("ERROR invalid command: SYNC"), the client stops asking and resumes
// with OnLogID(""): the worker still works, unchecked.
func TestClientFallsBackWhenTheServerRefusesTheRequest(t *testing.T) {
	fs := newFakeServer(t)
	ids := make(chan string, 4)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{
		Address: fs.addr(), Handler: h, Streams: []StreamRequest{{Stream: "caches", Token: 3}},
		InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnLogID: func(id string) error { ids <- id; return nil },
	})
	first := fs.accept()
	first.send("SERVER test.server", "PING 1")
	first.expectLine("SYNC " + LogIDRequest)
	first.send("ERROR invalid command: SYNC")
	first.nc.Close()

	second := fs.accept()
	second.send("SERVER test.server", "PING 1")
	second.expectLine("REPLICATE caches 3") // no SYNC this time
	if id := <-ids; id != "" {
		t.Fatalf("OnLogID(%q), want \"\" for a server without log ids", id)
	}
	second.send("RDATA caches 4 "+string(cacheRow(4)), "POSITION caches 4")
	waitFor(t, "row handled", func() bool { return len(h.rowTokens("caches")) == 1 })
}

// An older tcprepl master echoes the SYNC: no identity, rows flow.
func TestClientTreatsAnEchoAsNoLogID(t *testing.T) {
	_, addr := startServer(t, ServerConfig{}, NewMemorySource("caches"), &echoSyncHandler{})
	ids := make(chan string, 1)
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{Address: addr, Handler: h, Streams: []StreamRequest{{Stream: "caches", Now: true}},
		OnLogID: func(id string) error { ids <- id; return nil }})
	if id := <-ids; id != "" {
		t.Fatalf("OnLogID(%q) from a server without identity, want \"\"", id)
	}
	waitFor(t, "caught up", func() bool { return h.caughtUpCount() == 1 })
	if h.syncCount() != 0 {
		t.Fatal("the log-id exchange reached the SyncHandler")
	}
}

type echoSyncHandler struct{ recordingHandler }

func (h *echoSyncHandler) HandleCommand(conn *ServerConn, cmd Command) error {
	if s, ok := cmd.(SyncCommand); ok {
		return conn.Send(s)
	}
	return h.recordingHandler.HandleCommand(conn, cmd)
}
