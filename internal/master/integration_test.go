package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// liveMaster is a real master (Pebble log, protocol server, HTTP API) on
// 127.0.0.1 ports.
type liveMaster struct {
	*Master
	replAddr string
	httpURL  string
	served   chan error
}

func startMaster(t testing.TB, cfg masterapi.Config) *liveMaster {
	t.Helper()
	if cfg.ServerName == "" {
		cfg.ServerName = "hs.test"
	}
	m, err := New(cfg, Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lm := &liveMaster{Master: m, replAddr: replLn.Addr().String(), httpURL: "http://" + httpLn.Addr().String(), served: make(chan error, 1)}
	go func() { lm.served <- m.Serve(replLn, httpLn) }()
	t.Cleanup(func() { lm.stop(t) })
	waitFor(t, "master ready", func() bool {
		resp, err := http.Get(lm.httpURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return lm
}

// stop shuts the master down and checks Serve returned cleanly; safe to
// call more than once.
func (lm *liveMaster) stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := lm.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err, ok := <-lm.served:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(lm.served)
		}
	case <-ctx.Done():
		t.Error("Serve did not return after Shutdown")
	}
}

func (lm *liveMaster) publish(t testing.TB, stream string, rows ...string) int64 {
	t.Helper()
	body := `{"rows": [` + strings.Join(rows, ",") + `]}`
	resp, err := http.Post(lm.httpURL+"/v1/streams/"+stream+"/rows", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("publish to %s: %s: %s", stream, resp.Status, b)
	}
	var out masterapi.PublishResponse
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Token
}

func (lm *liveMaster) getJSON(t testing.TB, path string, v any) {
	t.Helper()
	req, err := http.NewRequest("GET", lm.httpURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lm.readToken != "" {
		req.Header.Set("Authorization", "Bearer "+lm.readToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// waitFor polls cond until it holds; tests never sleep for a fixed time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// worker is a real replication client that records what it receives.
type worker struct {
	client *replication.Client
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	rows      map[string][]string // stream -> rows in arrival order
	tokens    map[string][]int64  // stream -> tokens in arrival order
	positions map[string]int64
	syncs     []string
	errs      []error
	states    []replication.ClientState
}

func startWorker(t testing.TB, addr, name string, streams ...replication.StreamRequest) *worker {
	t.Helper()
	w := &worker{rows: map[string][]string{}, tokens: map[string][]int64{}, positions: map[string]int64{}, done: make(chan error, 1)}
	c, err := replication.NewClient(replication.ClientConfig{
		Address: addr, ServerName: "hs.test", Name: name, Streams: streams, Handler: w,
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.client = c
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- c.Run(ctx) }()
	t.Cleanup(w.stop)
	return w
}

func (w *worker) stop() {
	w.cancel()
	if err := <-w.done; err != nil && !errors.Is(err, context.Canceled) {
		w.mu.Lock()
		w.errs = append(w.errs, fmt.Errorf("client Run: %w", err))
		w.mu.Unlock()
	}
	w.done <- nil // let stop be called again
}

func (w *worker) HandleRows(_ context.Context, stream string, token int64, rows []json.RawMessage) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range rows {
		w.rows[stream] = append(w.rows[stream], string(r))
	}
	w.tokens[stream] = append(w.tokens[stream], token)
	return nil
}

func (w *worker) HandlePosition(stream string, token int64) {
	w.mu.Lock()
	w.positions[stream] = token
	w.mu.Unlock()
}

func (w *worker) HandleConnectionState(state replication.ClientState, err error) {
	w.mu.Lock()
	w.states = append(w.states, state)
	if err != nil {
		w.errs = append(w.errs, err)
	}
	w.mu.Unlock()
}

func (w *worker) HandleSync(data string) {
	w.mu.Lock()
	w.syncs = append(w.syncs, data)
	w.mu.Unlock()
}

func (w *worker) rowsOf(stream string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.rows[stream]...)
}

func (w *worker) caughtUp() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.states) > 0 && w.states[len(w.states)-1] == replication.ClientCaughtUp
}

func (w *worker) hasSync(data string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.syncs {
		if s == data {
			return true
		}
	}
	return false
}

func (w *worker) errText() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, e := range w.errs {
		b.WriteString(e.Error())
		b.WriteString("\n")
	}
	return b.String()
}

// barrier sends SYNC and waits for the echo: every command the worker
// sent before it has had its effect on the master.
func (w *worker) barrier(t testing.TB, id string) {
	t.Helper()
	if err := w.client.Send(replication.SyncCommand{Data: id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SYNC "+id+" echoed", func() bool { return w.hasSync(id) })
}

func TestPublishFanOutAndTables(t *testing.T) {
	lm := startMaster(t, masterapi.Config{})
	w := startWorker(t, lm.replAddr, "synchrotron", replication.StreamRequest{Stream: "caches"}, replication.StreamRequest{Stream: "events", Now: true})
	waitFor(t, "worker caught up", w.caughtUp)

	tok := lm.publish(t, "caches", `["get_user_by_id",["@a:x"],1]`, `["get_user_by_id", ["@\u00e9:x"], 2]`)
	if tok != 1 {
		t.Fatalf("token %d", tok)
	}
	waitFor(t, "rows delivered", func() bool { return len(w.rowsOf("caches")) == 2 })
	want := []string{`["get_user_by_id", ["@a:x"], 1]`, `["get_user_by_id", ["@\u00e9:x"], 2]`}
	if got := w.rowsOf("caches"); got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("rows %q, want Python json.dumps form %q", got, want)
	}
	w.mu.Lock()
	if toks := w.tokens["caches"]; len(toks) != 1 || toks[0] != 1 {
		t.Fatalf("batch tokens %v", toks)
	}
	w.mu.Unlock()

	// An invalid row names the field and stores nothing.
	resp, err := http.Post(lm.httpURL+"/v1/streams/pushers/rows", "application/json", strings.NewReader(`{"rows": [["@u:x", "app", "key", "yes"]]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "deleted") {
		t.Fatalf("bad pushers row: %s %s", resp.Status, b)
	}

	var streams struct{ Streams []masterapi.StreamStatus }
	lm.getJSON(t, "/v1/streams", &streams)
	for _, s := range streams.Streams {
		want := int64(0)
		if s.Name == "caches" {
			want = 1
		}
		if s.Token != want {
			t.Fatalf("stream %s at %d, want %d", s.Name, s.Token, want)
		}
	}

	var conns masterapi.ConnectionsResponse
	waitFor(t, "connection listed", func() bool {
		lm.getJSON(t, "/v1/connections", &conns)
		return len(conns.Connections) == 1 && len(conns.Connections[0].Streams) == 2 && conns.Connections[0].Streams[0].Token == 1
	})
	c := conns.Connections[0]
	if c.Name != "synchrotron" || !strings.HasPrefix(c.RemoteAddr, "127.0.0.1:") || c.ConnectedSince.IsZero() || c.CommandsIn["REPLICATE"] != 2 || c.CommandsOut["RDATA"] != 2 {
		t.Fatalf("connection %+v", c)
	}
	if s := c.Streams[0]; s.Name != "caches" || s.TokensBehind != 0 || s.SecondsBehind != 0 {
		t.Fatalf("caches subscription %+v", s)
	}
}

func TestCommandEffectsOverTheWire(t *testing.T) {
	lm := startMaster(t, masterapi.Config{Federation: true, Access: masterapi.Access{ReadTokenFile: writeTokenFile(t, "read-token")}})
	watcher := startWorker(t, lm.replAddr, "watcher",
		replication.StreamRequest{Stream: "presence"}, replication.StreamRequest{Stream: "caches"}, replication.StreamRequest{Stream: "pushers"})
	waitFor(t, "watcher caught up", watcher.caughtUp)
	w := startWorker(t, lm.replAddr, "synchrotron", replication.StreamRequest{Stream: "caches", Now: true})
	waitFor(t, "worker caught up", w.caughtUp)

	dev := "DEV1"
	for _, cmd := range []replication.Command{
		replication.UserSyncCommand{UserID: "@a:x", Active: true, LastSyncMS: 111},
		replication.UserSyncCommand{UserID: "@b:x", Active: true, LastSyncMS: 112},
		replication.UserSyncCommand{UserID: "@b:x", Active: false, LastSyncMS: 113},
		replication.InvalidateCacheCommand{CacheFunc: "get_user_by_id", Keys: json.RawMessage(`["@a:x"]`)},
		replication.RemovePusherCommand{AppID: "m.http", PushKey: "pk", UserID: "@a:x"},
		replication.UserIPCommand{UserID: "@a:x", AccessToken: "secret", IP: "10.1.2.3", UserAgent: "Element", DeviceID: &dev, LastSeen: 999},
	} {
		if err := w.client.Send(cmd); err != nil {
			t.Fatal(err)
		}
	}
	w.barrier(t, "effects")

	presence := func() []string {
		var out []string
		for _, r := range watcher.rowsOf("presence") {
			var row []any
			_ = json.Unmarshal([]byte(r), &row)
			out = append(out, fmt.Sprint(row[0], " ", row[1], " ", row[4], " ", row[6]))
		}
		return out
	}
	waitFor(t, "presence rows", func() bool { return len(presence()) == 3 })
	if got := strings.Join(presence(), "|"); got != "@a:x online 111 true|@b:x online 112 true|@b:x offline 113 false" {
		t.Fatalf("presence %s", got)
	}
	waitFor(t, "cache invalidation relayed to every connection", func() bool {
		return len(watcher.rowsOf("caches")) == 1 && len(w.rowsOf("caches")) == 1
	})
	if r := w.rowsOf("caches")[0]; !strings.HasPrefix(r, `["get_user_by_id", ["@a:x"], `) {
		t.Fatalf("caches row %s", r)
	}
	waitFor(t, "pushers row", func() bool { return len(watcher.rowsOf("pushers")) == 1 })
	if r := watcher.rowsOf("pushers")[0]; r != `["@a:x", "m.http", "pk", true]` {
		t.Fatalf("pushers row %s", r)
	}
	var ips UserIPsResponse
	lm.getJSON(t, "/v1/userips?user=@a:x", &ips)
	if len(ips.UserIPs) != 1 || ips.UserIPs[0] != (UserIP{UserID: "@a:x", IP: "10.1.2.3", DeviceID: "DEV1", UserAgent: "Element", LastSeen: 999}) {
		t.Fatalf("userips %+v", ips)
	}

	// FEDERATION_ACK trims: a subscriber from before the ack is refused
	// with the oldest token still held.
	for range 3 {
		lm.publish(t, "federation", `["edu", {"k": 1}]`)
	}
	if err := w.client.Send(replication.FederationAckCommand{Token: 2}); err != nil {
		t.Fatal(err)
	}
	w.barrier(t, "ack")
	var streams struct{ Streams []masterapi.StreamStatus }
	lm.getJSON(t, "/v1/streams", &streams)
	for _, s := range streams.Streams {
		if s.Name == "federation" && (s.OldestToken != 3 || s.Token != 3) {
			t.Fatalf("federation after ack 2: %+v", s)
		}
	}
	late := startWorker(t, lm.replAddr, "late", replication.StreamRequest{Stream: "federation", Token: 0})
	waitFor(t, "too-old ERROR", func() bool { return strings.Contains(late.errText(), "oldest token still held is 3") })
	late.stop()

	// The synchrotron's connection is lost: its users' syncs end.
	w.stop()
	waitFor(t, "offline on disconnect", func() bool { return len(presence()) == 4 })
	if got := presence()[3]; got != "@a:x offline 111 false" {
		t.Fatalf("presence after disconnect %s", got)
	}

	// Resource counters are counted (by the protocol server) under Synapse's names.
	resp, err := http.Get(lm.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"synapse_replication_tcp_resource_user_sync 3",
		"synapse_replication_tcp_resource_invalidate_cache 1",
		"synapse_replication_tcp_resource_remove_pusher 1",
		"synapse_replication_tcp_resource_user_ip_cache 1",
		"synapse_replication_tcp_resource_federation_ack 1",
		`tcprepl_master_stream_position{stream="federation"} 3`,
		`tcprepl_master_connection_tokens_behind{name=`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	lm := startMaster(t, masterapi.Config{})
	w := startWorker(t, lm.replAddr, "w", replication.StreamRequest{Stream: "caches"})
	waitFor(t, "caught up", w.caughtUp)
	if err := w.client.Send(replication.UserSyncCommand{UserID: "@a:x", Active: true, LastSyncMS: 1}); err != nil {
		t.Fatal(err)
	}
	w.barrier(t, "s")
	lm.stop(t)
	waitFor(t, "ERROR server shutting down", func() bool { return strings.Contains(w.errText(), "server shutting down") })
	var rerr *replication.RemoteError
	w.mu.Lock()
	found := false
	for _, e := range w.errs {
		found = found || errors.As(e, &rerr)
	}
	w.mu.Unlock()
	if !found {
		t.Fatalf("no RemoteError among %s", w.errText())
	}
	// Publishing after shutdown is refused (/readyz: TestReadyzWhileShuttingDown).
	if _, err := lm.Publish(context.Background(), "caches", []json.RawMessage{json.RawMessage(`["f", [], 1]`)}); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("publish after shutdown: %v", err)
	}
}

func TestDurableAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	// Small storage settings exercise their wiring; the log must work the same.
	lm := startMaster(t, masterapi.Config{DataDir: dir, Storage: masterapi.Storage{MemTableBytes: 1 << 20, BlockCacheBytes: 1 << 20, TailCacheBytes: -1}})
	for i := range 3 {
		if tok := lm.publish(t, "typing", fmt.Sprintf(`["!r%d", ["@a:x"]]`, i)); tok != int64(i+1) {
			t.Fatalf("token %d", tok)
		}
	}
	lm.stop(t)

	lm2 := startMaster(t, masterapi.Config{DataDir: dir})
	if tok := lm2.publish(t, "typing", `["!r3", []]`); tok != 4 {
		t.Fatalf("token after restart %d, want 4", tok)
	}
	w := startWorker(t, lm2.replAddr, "w", replication.StreamRequest{Stream: "typing"})
	waitFor(t, "all rows", func() bool { return len(w.rowsOf("typing")) == 4 })
	got := strings.Join(w.rowsOf("typing"), "|")
	if got != `["!r0", ["@a:x"]]|["!r1", ["@a:x"]]|["!r2", ["@a:x"]]|["!r3", []]` {
		t.Fatalf("rows after restart %s", got)
	}
}

// TestShutdownRecordsSyncingUsersOffline: users syncing when the master
// stops are offline in the log after it, so a restarted master does not
// leave them online forever if their worker never comes back.
func TestShutdownRecordsSyncingUsersOffline(t *testing.T) {
	dir := t.TempDir()
	lm := startMaster(t, masterapi.Config{DataDir: dir})
	w := startWorker(t, lm.replAddr, "w", replication.StreamRequest{Stream: "caches", Now: true})
	waitFor(t, "caught up", w.caughtUp)
	for _, u := range []string{"@a:x", "@b:x"} {
		if err := w.client.Send(replication.UserSyncCommand{UserID: u, Active: true, LastSyncMS: 5}); err != nil {
			t.Fatal(err)
		}
	}
	w.barrier(t, "synced")
	lm.stop(t)
	w.stop()

	lm2 := startMaster(t, masterapi.Config{DataDir: dir})
	r := startWorker(t, lm2.replAddr, "reader", replication.StreamRequest{Stream: "presence"})
	waitFor(t, "presence rows", func() bool { return len(r.rowsOf("presence")) == 4 })
	var states []string
	for _, row := range r.rowsOf("presence") {
		var v []any
		if err := json.Unmarshal([]byte(row), &v); err != nil {
			t.Fatal(err)
		}
		states = append(states, fmt.Sprint(v[0], " ", v[1]))
	}
	if got := strings.Join(states, "|"); got != "@a:x online|@b:x online|@a:x offline|@b:x offline" {
		t.Fatalf("presence %s", got)
	}
}

// TestRetentionAndTooOld: configured retention trims the log, /v1/streams
// shows the oldest token held, and a worker asking from before it gets the
// ERROR naming that token, while one asking from it catches up.
func TestRetentionAndTooOld(t *testing.T) {
	lm := startMaster(t, masterapi.Config{
		Retention:         map[string]masterapi.Retention{"typing": {MaxRows: 2}},
		RetentionInterval: masterapi.Duration{Duration: 5 * time.Millisecond},
	})
	for i := range 5 {
		lm.publish(t, "typing", fmt.Sprintf(`["!r%d", []]`, i))
	}
	waitFor(t, "retention applied", func() bool {
		var streams struct{ Streams []masterapi.StreamStatus }
		lm.getJSON(t, "/v1/streams", &streams)
		for _, s := range streams.Streams {
			if s.Name == "typing" {
				return s.OldestToken == 4 && s.Token == 5 && s.Rows == 2
			}
		}
		return false
	})
	old := startWorker(t, lm.replAddr, "old", replication.StreamRequest{Stream: "typing", Token: 1})
	waitFor(t, "too-old ERROR", func() bool {
		return strings.Contains(old.errText(), "token 1 is older than retention; the oldest token still held is 4")
	})
	old.stop()
	ok := startWorker(t, lm.replAddr, "ok", replication.StreamRequest{Stream: "typing", Token: 3})
	waitFor(t, "rows from the oldest held", func() bool { return len(ok.rowsOf("typing")) == 2 })
	if got := strings.Join(ok.rowsOf("typing"), "|"); got != `["!r3", []]|["!r4", []]` {
		t.Fatalf("rows %s", got)
	}
}

// countingWorker checks, as rows arrive, that a custom stream's rows carry
// consecutive sequence numbers: every row once, in order.
type countingWorker struct {
	mu       sync.Mutex
	next     int64
	err      error
	caughtUp bool
}

func (c *countingWorker) HandleRows(_ context.Context, _ string, _ int64, rows []json.RawMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		var v [1]int64
		if err := json.Unmarshal(r, &v); err != nil {
			c.err = err
			continue
		}
		if v[0] != c.next && c.err == nil {
			c.err = fmt.Errorf("row %d arrived when %d was expected", v[0], c.next)
		}
		c.next = v[0] + 1
	}
	return nil
}
func (c *countingWorker) HandlePosition(string, int64) {}
func (c *countingWorker) HandleConnectionState(s replication.ClientState, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s == replication.ClientCaughtUp {
		c.caughtUp = true
	}
	if s == replication.ClientDisconnected && err != nil && c.err == nil {
		// A reconnect would resume correctly, but this test wants one
		// uninterrupted catch-up.
		c.err = fmt.Errorf("disconnected: %w", err)
	}
}

func (c *countingWorker) state() (int64, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next, c.err, c.caughtUp
}

// TestCatchUpMillionRows: a subscriber starting from 0 catches up a million
// rows while publishing continues, and gets every row once, in order.
// Under -race it catches up 200,000 (a million takes two minutes there);
// run it without -race for the full million (about 4 s).
func TestCatchUpMillionRows(t *testing.T) {
	if testing.Short() {
		t.Skip("catch-up of a million rows")
	}
	lm := startMaster(t, masterapi.Config{Ephemeral: true, CustomStreams: []masterapi.CustomStream{{Name: "seq", Fields: 1}}})
	total, extra := int64(1_000_000), int64(100_000)
	if raceEnabled {
		total, extra = 200_000, 20_000
	}
	t.Logf("catching up %d rows while %d more are published", total, extra)
	const batch = 500
	ctx := context.Background()
	seq := int64(0)
	publishBatch := func() error {
		rows := make([]json.RawMessage, batch)
		for i := range rows {
			rows[i] = json.RawMessage(fmt.Sprintf("[%d]", seq))
			seq++
		}
		_, err := lm.Publish(ctx, "seq", rows)
		return err
	}
	for seq < total {
		if err := publishBatch(); err != nil {
			t.Fatal(err)
		}
	}
	cw := &countingWorker{}
	c, err := replication.NewClient(replication.ClientConfig{Address: lm.replAddr, ServerName: "hs.test", Name: "catcher",
		Streams: []replication.StreamRequest{{Stream: "seq", Token: 0}}, Handler: cw})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("client Run: %v", err)
		}
	}()
	// Keep publishing while the subscriber catches up, then a little more.
	for seq < total+extra {
		if err := publishBatch(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// The last row can arrive before the POSITION that ends the
		// catch-up (when the head was reached with it), so wait for both.
		next, err, caught := cw.state()
		if (next >= total+extra && caught) || err != nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(lm.ConnectionTable())
			t.Fatalf("delivered up to %d of %d; connections: %s", next, total+extra, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	next, err, caught := cw.state()
	if err != nil || next != total+extra || !caught {
		t.Fatalf("delivered up to %d (want %d), caught up %v, err %v", next, total+extra, caught, err)
	}
}
