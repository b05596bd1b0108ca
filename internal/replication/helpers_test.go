package replication

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds or the deadline passes; tests poll
// instead of sleeping for a guessed duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitForConn polls the server's only connection until cond holds and
// returns that snapshot. A reader can see a line before the writer has
// finished its accounting for it (pending counts drop, bytes out grow after
// the write returns), so tests wait for the state the code guarantees
// rather than assert on the first snapshot.
func waitForConn(t *testing.T, srv *Server, what string, cond func(ConnectionInfo) bool) ConnectionInfo {
	t.Helper()
	var last ConnectionInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		infos := srv.Connections()
		if len(infos) == 1 {
			last = infos[0]
			if cond(last) {
				return last
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; %d connections, last snapshot %+v", what, len(infos), last)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// drained reports a connection with nothing queued or in flight.
func drained(c ConnectionInfo) bool { return c.PendingCommands == 0 && c.PendingBytes == 0 }

// recordingHandler is a server Handler that records what it gets.
type recordingHandler struct {
	mu     sync.Mutex
	cmds   []Command
	closed []string
	err    error // returned by HandleCommand
}

func (h *recordingHandler) HandleCommand(_ *ServerConn, cmd Command) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmds = append(h.cmds, cmd)
	return h.err
}

func (h *recordingHandler) ConnectionClosed(_ *ServerConn, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = append(h.closed, reason)
}

func (h *recordingHandler) commands() []Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Command(nil), h.cmds...)
}

func (h *recordingHandler) closeReasons() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.closed...)
}

// startServer runs a server on 127.0.0.1:0 and shuts it down at cleanup.
func startServer(t *testing.T, cfg ServerConfig, src Source, h Handler) (*Server, string) {
	t.Helper()
	if cfg.ServerName == "" {
		cfg.ServerName = "test.server"
	}
	srv, err := NewServer(cfg, src, h)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, ln.Addr().String()
}

// rawClient is a hand-driven TCP peer: it writes lines and reads lines, to
// check the exact bytes on the wire.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReaderSize(nc, 1<<20)}
}

func (r *rawClient) send(lines ...string) {
	r.t.Helper()
	for _, l := range lines {
		if _, err := fmt.Fprintf(r.nc, "%s\n", l); err != nil {
			r.t.Fatalf("write %q: %v", l, err)
		}
	}
}

// readLine returns the next line without its newline, failing the test
// after a timeout.
func (r *rawClient) readLine() string {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read line: %v (partial %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// readUntil reads lines, skipping PINGs, until one has the prefix; it
// returns the lines read (without PINGs), the matching one last.
func (r *rawClient) readUntil(prefix string) []string {
	r.t.Helper()
	var got []string
	for {
		l := r.readLine()
		if strings.HasPrefix(l, "PING ") {
			continue
		}
		got = append(got, l)
		if strings.HasPrefix(l, prefix) {
			return got
		}
	}
}

// expectLine reads the next non-PING line and checks it.
func (r *rawClient) expectLine(want string) {
	r.t.Helper()
	for {
		l := r.readLine()
		if strings.HasPrefix(l, "PING ") && !strings.HasPrefix(want, "PING ") {
			continue
		}
		if l != want {
			r.t.Fatalf("got line %q, want %q", l, want)
		}
		return
	}
}

// expectClosed reads until EOF, returning the non-PING lines seen.
func (r *rawClient) expectClosed() []string {
	r.t.Helper()
	var got []string
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("connection not closed; lines so far %q", got)
			}
			return got
		}
		line = strings.TrimSuffix(line, "\n")
		if !strings.HasPrefix(line, "PING ") {
			got = append(got, line)
		}
	}
}

// handshake consumes SERVER and the first PING.
func (r *rawClient) handshake(serverName string) {
	r.t.Helper()
	r.expectLine("SERVER " + serverName)
	if l := r.readLine(); !strings.HasPrefix(l, "PING ") {
		r.t.Fatalf("second line %q, want PING", l)
	}
}

func row(s string) json.RawMessage { return json.RawMessage(s) }

// cacheRow is a caches-stream row of about 100 bytes.
func cacheRow(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`["get_user_by_id", ["@user%08d:example.com"], 1490197670513]`, i))
}

// recordingClientHandler records what a Client delivers.
type recordingClientHandler struct {
	mu        sync.Mutex
	rows      map[string][]int64 // token per delivered row
	batches   map[string][][]json.RawMessage
	positions map[string][]int64
	states    []ClientState
	errs      []error
	failAt    map[string]int64 // HandleRows fails once at this token
	syncs     []string
	caughtUp  int
}

func newRecordingClientHandler() *recordingClientHandler {
	return &recordingClientHandler{rows: map[string][]int64{}, batches: map[string][][]json.RawMessage{}, positions: map[string][]int64{}, failAt: map[string]int64{}}
}

func (h *recordingClientHandler) HandleRows(_ context.Context, stream string, token int64, rows []json.RawMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.failAt[stream]; ok && t == token {
		delete(h.failAt, stream)
		return fmt.Errorf("injected failure at %s %d", stream, token)
	}
	for range rows {
		h.rows[stream] = append(h.rows[stream], token)
	}
	h.batches[stream] = append(h.batches[stream], rows)
	return nil
}

func (h *recordingClientHandler) HandlePosition(stream string, token int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.positions[stream] = append(h.positions[stream], token)
}

func (h *recordingClientHandler) HandleConnectionState(state ClientState, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states = append(h.states, state)
	if state == ClientCaughtUp {
		h.caughtUp++
	}
	if err != nil {
		h.errs = append(h.errs, err)
	}
}

func (h *recordingClientHandler) HandleSync(data string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.syncs = append(h.syncs, data)
}

func (h *recordingClientHandler) syncCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.syncs)
}

func (h *recordingClientHandler) rowTokens(stream string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.rows[stream]...)
}

func (h *recordingClientHandler) caughtUpCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.caughtUp
}

func (h *recordingClientHandler) errors() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// runClient runs a client until the test ends.
func runClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return c
}

// fakeServer is a hand-driven server for client tests.
type fakeServer struct {
	t  *testing.T
	ln net.Listener
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeServer{t: t, ln: ln}
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

// accept waits for the client's next connection.
func (f *fakeServer) accept() *rawClient {
	f.t.Helper()
	type res struct {
		nc  net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		nc, err := f.ln.Accept()
		ch <- res{nc, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			f.t.Fatalf("accept: %v", r.err)
		}
		f.t.Cleanup(func() { r.nc.Close() })
		return &rawClient{t: f.t, nc: r.nc, br: bufio.NewReaderSize(r.nc, 1<<20)}
	case <-time.After(10 * time.Second):
		f.ln.Close()
		<-ch
		f.t.Fatal("no connection from the client")
		return nil
	}
}
