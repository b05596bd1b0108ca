package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/backoff"
)

// ClientState is the client's connection state, reported to the handler.
type ClientState int

const (
	// ClientConnecting: dialing the server.
	ClientConnecting ClientState = iota
	// ClientConnected: connected, NAME/PING/REPLICATE sent; catching up.
	ClientConnected
	// ClientCaughtUp: every requested stream has had its POSITION.
	ClientCaughtUp
	// ClientDisconnected: the connection is gone; the client will retry
	// unless its context is done.
	ClientDisconnected
)

func (s ClientState) String() string {
	switch s {
	case ClientConnecting:
		return "connecting"
	case ClientConnected:
		return "connected"
	case ClientCaughtUp:
		return "caught-up"
	case ClientDisconnected:
		return "disconnected"
	}
	return "ClientState(" + strconv.Itoa(int(s)) + ")"
}

// ErrWrongRemote is wrapped by the disconnect error when the server announced
// a different SERVER name than ClientConfig.ServerName.
var ErrWrongRemote = errors.New("wrong remote: the server announced a different server name")

// ErrLogChanged is wrapped by the error of a ClientConfig.OnLogID hook that
// refuses the server's log: the client's positions belong to another log
// (the master's log was wiped and created anew), so resuming would skip the
// new log's first rows. Run stops with it instead of reconnecting.
var ErrLogChanged = errors.New("the master's log is not the one the saved positions belong to")

// RemoteError is an ERROR the server sent. The client records it and reports
// it with the disconnect that (usually) follows.
type RemoteError struct {
	Message string
}

func (e *RemoteError) Error() string { return "server sent ERROR " + e.Message }

// StandbyMessage is the ERROR a standby master (PostgreSQL log, another
// master active) answers a replication connection with. It is not a
// refusal of what the client asked: the client reconnects, through the
// Service, to the active master.
const StandbyMessage = "this master is a standby; reconnect to the active master"

// StreamRequest is one stream the client replicates: from Token (rows after
// it), or from now on with Now. Stream may be "ALL" with Now.
type StreamRequest struct {
	Stream string
	Token  int64
	Now    bool
}

// ClientHandler receives what the server sends. Its methods are called on
// the connection's read loop, one at a time: while one runs, nothing more is
// read, so a call that blocks for longer than the ping timeout (25 s) gets
// the connection timed out.
type ClientHandler interface {
	// HandleRows receives a whole batch of rows sharing one token (one row
	// when not batched). rows are the RDATA JSON as received; they and the
	// slice are the handler's to keep: the client never writes to them
	// again, and each row's capacity, like the slice's, ends with it (an
	// append copies). To save allocations, small rows (and their slice) are
	// carved from blocks shared with other calls' rows, so keeping one keeps
	// its block in memory: copy a row to keep it alone for long. An error
	// disconnects; the client then resumes from the last token handled
	// successfully.
	HandleRows(ctx context.Context, stream string, token int64, rows []json.RawMessage) error
	// HandlePosition reports a POSITION: the stream is at token.
	HandlePosition(stream string, token int64)
	// HandleConnectionState reports state changes. With ClientDisconnected
	// err says why (it wraps ErrWrongRemote, *RemoteError, ErrPingTimeout,
	// a net error, or the handler's own error).
	HandleConnectionState(state ClientState, err error)
}

// SyncHandler is optionally implemented by a ClientHandler to receive SYNC.
type SyncHandler interface {
	HandleSync(data string)
}

// ClientConfig configures a Client. Zero values take the protocol defaults.
type ClientConfig struct {
	// Address is the server's host:port.
	Address string
	// ServerName is the name the server must announce; empty accepts any.
	ServerName string
	// Name is sent with NAME; empty sends no NAME.
	Name string
	// Streams to replicate. After a stream's first POSITION, reconnects
	// resume it from its last numeric token.
	Streams []StreamRequest
	// Handler receives rows, positions and state changes (required).
	Handler ClientHandler
	// Dial replaces net.Dialer.DialContext (e.g. for TLS).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	MaxLineLength      int           // default 16384
	MaxPendingCommands int           // default 10000; also bounds the commands kept while disconnected
	PingInterval       time.Duration // default 5s
	PingTimeout        time.Duration // default 25s
	WriteTimeout       time.Duration // default 10s
	Clock              Clock
	Logger             logr.Logger
	Registerer         prometheus.Registerer
	// InitialBackoff is the first reconnect delay (default 100ms); it doubles
	// up to MaxBackoff (default 1s), with jitter, and resets only once every
	// stream has caught up.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration

	// OnLogID, when set, asks the server for its log's identity on every
	// connection (the tcprepl extension "SYNC tcprepl-log-id", see
	// docs/protocol.md) and is called with it before any RDATA or
	// POSITION of that connection is handled; with "" when the server
	// announces none (a 2020 Synapse master, an older tcprepl). An error
	// closes the connection; one wrapping ErrLogChanged also stops Run.
	OnLogID func(id string) error
}

// Client is the worker side: it keeps a connection to the server, replicates
// streams and reconnects when the connection is lost.
type Client struct {
	cfg     ClientConfig
	metrics *metrics
	log     logr.Logger
	connCfg connConfig
	ids     atomic.Uint64

	mu         sync.Mutex
	positions  map[string]*atomic.Int64 // entries added under mu, values atomic
	allStreams map[string]bool          // streams learnt from REPLICATE ALL NOW
	outbox     []Command
	cur        *conn // nil while disconnected
	running    bool
	// noLogIDExt is set once the server refused the log-id request
	// ("ERROR invalid command: SYNC", as a 2020 Synapse master answers):
	// later connections do not ask again.
	noLogIDExt atomic.Bool
}

// NewClient checks cfg and returns a client; Run connects it.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("replication: ClientConfig.Address is required")
	}
	if cfg.Handler == nil {
		return nil, errors.New("replication: ClientConfig.Handler is required")
	}
	for _, r := range cfg.Streams {
		if err := checkWord("stream", r.Stream); err != nil || r.Stream == "" {
			return nil, fmt.Errorf("replication: invalid stream name %q in ClientConfig.Streams", r.Stream)
		}
		if r.Stream == ReplicateAll && !r.Now {
			return nil, errors.New("replication: stream ALL can only be replicated with Now")
		}
	}
	if cfg.Name != "" {
		if err := checkText("client name", cfg.Name); err != nil {
			return nil, fmt.Errorf("replication: ClientConfig.Name: %w", err)
		}
	}
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.MaxPendingCommands <= 0 {
		cfg.MaxPendingCommands = DefaultMaxPendingCommands
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.InitialBackoff)
	cfg.Clock = clockOrReal(cfg.Clock)
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		cfg.Dial = d.DialContext
	}
	m, err := metricsFor(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:        cfg,
		metrics:    m,
		log:        cfg.Logger.WithName("replication-client"),
		positions:  map[string]*atomic.Int64{},
		allStreams: map[string]bool{},
	}
	c.connCfg = connConfig{
		maxLineLength: cfg.MaxLineLength,
		limits:        queueLimits{cmds: cfg.MaxPendingCommands, bytes: DefaultMaxPendingBytes},
		writeTimeout:  cfg.WriteTimeout,
		pingInterval:  cfg.PingInterval,
		pingTimeout:   cfg.PingTimeout,
		clock:         cfg.Clock,
		logger:        c.log,
		metrics:       m,
		inboundOK:     SentByServer,
	}
	return c, nil
}

// Positions returns the last numeric token handled (or POSITIONed) per stream.
func (c *Client) Positions() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.positions))
	for k, v := range c.positions {
		out[k] = v.Load()
	}
	return out
}

// errOutboxFull is returned by Send when too many commands wait for a connection.
var errOutboxFull = errors.New("too many commands queued while disconnected")

// Send sends a client command now, or after the next connect when the
// client is disconnected.
func (c *Client) Send(cmd Command) error {
	if cmd == nil || !SentByClient(cmd.Name()) {
		return fmt.Errorf("replication: a client cannot send %s", commandName(cmd))
	}
	// Check it formats and fits now, not after the reconnect.
	if _, err := c.connCfgLine(cmd); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		if err := c.cur.sendControl(cmd); err == nil {
			return nil
		}
	}
	if len(c.outbox) >= c.cfg.MaxPendingCommands {
		return fmt.Errorf("replication: send %s: %w (%d); the server has been unreachable for a while", cmd.Name(), errOutboxFull, len(c.outbox))
	}
	c.outbox = append(c.outbox, cmd)
	return nil
}

func (c *Client) connCfgLine(cmd Command) ([]byte, error) {
	tmp := conn{cfg: c.connCfg}
	return tmp.encodeLine(cmd)
}

// Run connects and keeps reconnecting until ctx is done, then returns
// ctx's error. It may be called only once at a time.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("replication: Client.Run is already running")
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()

	// The delay starts again from InitialBackoff only after a connection on
	// which every stream caught up (as Synapse did), so a server that
	// accepts and then drops connections is not hammered.
	b := backoff.New(c.cfg.InitialBackoff, c.cfg.MaxBackoff)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		caughtUp, err := c.runOnce(ctx)
		c.cfg.Handler.HandleConnectionState(ClientDisconnected, err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrLogChanged) {
			return err
		}
		if caughtUp {
			b.Reset()
		}
		delay := b.Next()
		c.log.V(1).Info("replication connection lost; reconnecting", "delay", delay, "error", errString(err))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// session is the client's state for one connection.
type session struct {
	c          *Client
	conn       *conn
	ctx        context.Context
	waiting    map[string]bool          // streams asked for without their POSITION yet
	waitingAll bool                     // REPLICATE ALL NOW sent, no POSITION yet
	sentAll    bool                     // REPLICATE ALL NOW sent on this connection
	explicit   map[string]bool          // streams asked for by name
	positions  map[string]*atomic.Int64 // this session's cache of Client.positions
	// rdataStreams is the RDATA state of each stream seen on this
	// connection; lastRdata is that of the last RDATA, as rows mostly come
	// in runs of one stream.
	rdataStreams map[string]*rdataStream
	lastRdata    *rdataStream
	arena        rowArena // where the handler's rows are copied
	caughtUp     atomic.Bool
	remoteErr    *RemoteError
	failure      error // why the session closed, when it chose to
	// awaitingLogID: the log-id request was sent and not yet answered.
	askedLogID, awaitingLogID bool
}

// rdataStream is a session's RDATA state for one stream.
type rdataStream struct {
	name    string
	counter prometheus.Counter // inbound_rdata_count{stream}; nil without metrics
	pos     *atomic.Int64      // the client's position cell, once rows were handled
	// The rows of the batch being received, back to back, and the end of
	// each in batch. Both are scratch, reused from one batch to the next:
	// the handler gets a copy.
	batch []byte
	ends  []int
}

// Scratch kept after a batch is handed over; a larger batch's is dropped so
// that one huge batch does not stay allocated for the connection's life.
const (
	maxKeptBatchBytes = 256 << 10
	maxKeptBatchRows  = 4096
)

// add appends a row to the pending batch. While the scratch has room it
// only reslices, so that the fields' pointers are not rewritten (with a GC
// write barrier) per row.
func (st *rdataStream) add(row []byte) {
	if n := len(st.batch); n+len(row) <= cap(st.batch) {
		st.batch = st.batch[:n+len(row)]
		copy(st.batch[n:], row)
	} else {
		st.batch = append(st.batch, row...)
	}
	if n := len(st.ends); n < cap(st.ends) {
		st.ends = st.ends[:n+1]
		st.ends[n] = len(st.batch)
	} else {
		st.ends = append(st.ends, len(st.batch))
	}
}

// Rows for the handler are copied into shared blocks of arenaBlock bytes
// when they (a whole batch's rows together) are at most arenaMaxCopy bytes;
// their slices then come from shared blocks of arenaHeaders row headers.
// Larger ones get allocations of their own. 6912 bytes is a size class the
// allocator packs seven to a span (8 KiB blocks would take a span each,
// which costs a trip to the central free lists per block).
const (
	arenaBlock   = 6912
	arenaMaxCopy = 1 << 10
	arenaHeaders = 128
)

// rowArena copies rows for the handler: small ones into shared blocks,
// saving two allocations (and the GC work of them) per call. The memory
// handed out is never written again; only the blocks' unused tails are.
// A header block points into one row block only (a new row block starts a
// new header block), so keeping a slice keeps no other calls' rows than
// keeping one of its rows does.
type rowArena struct {
	block []byte
	used  int
	hdrs  []json.RawMessage
	hused int
}

// clone returns a copy of b whose capacity ends with it, and whether it is
// in the shared block.
func (a *rowArena) clone(b []byte) ([]byte, bool) {
	n := len(b)
	if n > arenaMaxCopy {
		c := bytes.Clone(b)
		return c[:n:n], false
	}
	if n > len(a.block)-a.used {
		a.block, a.used = make([]byte, arenaBlock), 0
		a.hdrs, a.hused = nil, 0
	}
	// Indexing from used (not reslicing the field) keeps the block's
	// pointer unwritten, so no GC write barrier per row.
	out := a.block[a.used : a.used+n : a.used+n]
	copy(out, b)
	a.used += n
	return out, true
}

// headers returns a slice of n row headers, whose capacity ends with it:
// from the shared header block for rows in the shared row block.
func (a *rowArena) headers(n int, shared bool) []json.RawMessage {
	if !shared || n > arenaHeaders {
		return make([]json.RawMessage, n)
	}
	if n > len(a.hdrs)-a.hused {
		a.hdrs, a.hused = make([]json.RawMessage, arenaHeaders), 0
	}
	out := a.hdrs[a.hused : a.hused+n : a.hused+n]
	a.hused += n
	return out
}

// take returns the stream's pending batch rows followed by last, as the
// handler gets them: their bytes copied back to back by the arena, which
// also provides the slice, each row's capacity ending with it so that
// appending to one cannot overwrite the next. The scratch is reset for the
// next batch.
func (st *rdataStream) take(a *rowArena, last []byte) []json.RawMessage {
	n := len(st.ends)
	if n == 0 {
		row, shared := a.clone(last)
		rows := a.headers(1, shared)
		rows[0] = row
		return rows
	}
	st.batch = append(st.batch, last...)
	data, shared := a.clone(st.batch)
	rows := a.headers(n+1, shared)
	start := 0
	for i, end := range st.ends {
		rows[i] = data[start:end:end]
		start = end
	}
	rows[n] = data[start:len(data):len(data)]
	if cap(st.batch) > maxKeptBatchBytes {
		st.batch = nil
	} else {
		st.batch = st.batch[:0]
	}
	if cap(st.ends) > maxKeptBatchRows {
		st.ends = nil
	} else {
		st.ends = st.ends[:0]
	}
	return rows
}

func (c *Client) runOnce(ctx context.Context) (caughtUp bool, err error) {
	c.cfg.Handler.HandleConnectionState(ClientConnecting, nil)
	nc, err := c.cfg.Dial(ctx, "tcp", c.cfg.Address)
	if err != nil {
		return false, fmt.Errorf("dial replication server %s: %w", c.cfg.Address, err)
	}
	cn := newConn(c.connCfg, nc, c.ids.Add(1), c.cfg.Name)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{c: c, conn: cn, ctx: sctx, waiting: map[string]bool{}, explicit: map[string]bool{},
		positions: map[string]*atomic.Int64{}, rdataStreams: map[string]*rdataStream{}}
	cn.dispatch = s.dispatch
	cn.rdata = s.handleRdata
	cn.onClosing = cancel
	stop := context.AfterFunc(ctx, func() {
		cn.closeWith(CloseShutdown, "", false, ctx.Err())
	})
	defer stop()

	if err := c.startSession(s); err != nil {
		cn.closeWith(CloseHandlerError, "", false, err)
	}
	c.metrics.addConn(cn)
	c.cfg.Handler.HandleConnectionState(ClientConnected, nil)
	if len(s.waiting) == 0 && !s.waitingAll {
		s.markCaughtUp()
	}
	reason, cerr := cn.run()
	c.metrics.removeConn(cn)
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	c.mu.Unlock()

	if s.askedLogID && s.remoteErr != nil && s.remoteErr.Message == "invalid command: "+CmdSync {
		// A 2020 Synapse master: it knows no log ids, and closes a
		// connection that sends SYNC. Do not ask it again.
		c.noLogIDExt.Store(true)
		c.log.Info("the replication server does not announce a log id (a Synapse master?); resuming without checking it")
	}
	switch {
	case s.failure != nil:
		err = s.failure
	case reason == CloseShutdown && ctx.Err() != nil:
		err = ctx.Err()
	case s.remoteErr != nil:
		err = fmt.Errorf("connection closed (%s) after the server reported an error: %w", reason, s.remoteErr)
	case cerr != nil:
		err = fmt.Errorf("replication connection closed (%s): %w", reason, cerr)
	default:
		err = fmt.Errorf("replication connection closed (%s)", reason)
	}
	return s.caughtUp.Load(), err
}

// startSession sends the opening commands (NAME, PING, one REPLICATE per
// stream, then the commands queued while disconnected) and makes the
// connection current, all under the client's lock so that Send cannot slip
// a command in between.
func (c *Client) startSession(s *session) error {
	cn := s.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	var opening []Command
	if c.cfg.Name != "" {
		opening = append(opening, NameCommand{ClientName: c.cfg.Name})
	}
	opening = append(opening, PingCommand{Data: strconv.FormatInt(c.cfg.Clock.Now().UnixMilli(), 10)})
	if c.cfg.OnLogID != nil {
		if c.noLogIDExt.Load() {
			if err := c.cfg.OnLogID(""); err != nil {
				return err
			}
		} else {
			// Before the REPLICATEs: the server answers it before any
			// RDATA or POSITION of this connection.
			opening = append(opening, SyncCommand{Data: LogIDRequest})
			s.askedLogID, s.awaitingLogID = true, true
		}
	}
	for _, r := range c.replicateCommandsLocked(s) {
		opening = append(opening, r)
	}
	// The outbox is bounded by MaxPendingCommands already; with the
	// opening commands it may exceed the slow-consumer limit, which is for
	// a peer that does not read, not for our own backlog.
	for _, cmd := range append(opening, c.outbox...) {
		if err := cn.sendUnlimited(cmd); err != nil {
			return err
		}
	}
	c.outbox = nil
	c.cur = cn
	return nil
}

// replicateCommandsLocked builds the REPLICATE commands of a new connection:
// each stream resumes from its last numeric token once it has one.
func (c *Client) replicateCommandsLocked(s *session) []ReplicateCommand {
	var cmds []ReplicateCommand
	add := func(stream string, token int64, now bool) {
		if s.explicit[stream] {
			return
		}
		s.explicit[stream] = true
		s.waiting[stream] = true
		cmds = append(cmds, ReplicateCommand{Stream: stream, Token: token, Now: now})
	}
	wantAll := false
	for _, r := range c.cfg.Streams {
		if r.Stream == ReplicateAll {
			wantAll = true
			continue
		}
		if pos, ok := c.positions[r.Stream]; ok {
			add(r.Stream, pos.Load(), false)
		} else {
			add(r.Stream, r.Token, r.Now)
		}
	}
	if wantAll {
		if len(c.allStreams) == 0 {
			s.waitingAll, s.sentAll = true, true
			cmds = append(cmds, ReplicateCommand{Stream: ReplicateAll, Now: true})
		} else {
			for stream := range c.allStreams {
				add(stream, c.positions[stream].Load(), false)
			}
		}
	}
	return cmds
}

func (s *session) markCaughtUp() {
	if s.caughtUp.CompareAndSwap(false, true) {
		s.c.cfg.Handler.HandleConnectionState(ClientCaughtUp, nil)
	}
}

// fail records why the session closes and closes it.
func (s *session) fail(reason, errText string, err error) error {
	s.failure = err
	return &dispatchError{reason: reason, errText: errText, err: err}
}

// position returns the client's position cell for a stream, creating it.
func (s *session) position(stream string) *atomic.Int64 {
	if p, ok := s.positions[stream]; ok {
		return p
	}
	c := s.c
	c.mu.Lock()
	p, ok := c.positions[stream]
	if !ok {
		p = new(atomic.Int64)
		c.positions[stream] = p
	}
	c.mu.Unlock()
	s.positions[stream] = p
	return p
}

// rdataStream returns the session's RDATA state for a stream, creating it.
func (s *session) rdataStream(stream string) *rdataStream {
	if st := s.lastRdata; st != nil && st.name == stream {
		return st
	}
	st, ok := s.rdataStreams[stream]
	if !ok {
		st = &rdataStream{name: stream}
		if m := s.c.metrics; m != nil {
			st.counter = m.inboundRdata.WithLabelValues(stream)
		}
		s.rdataStreams[stream] = st
	}
	s.lastRdata = st
	return st
}

// handleRdata handles one RDATA line, on the read loop. row aliases the
// read buffer: it is copied here, once (into the batch's scratch, then with
// the whole batch into memory the handler may keep).
func (s *session) handleRdata(stream string, token int64, batch bool, row []byte) error {
	if s.awaitingLogID {
		if err := s.logID(""); err != nil {
			return err
		}
	}
	st := s.rdataStream(stream)
	if st.counter != nil {
		st.counter.Inc()
	}
	if batch {
		st.add(row)
		return nil
	}
	rows := st.take(&s.arena, row)
	if err := s.c.cfg.Handler.HandleRows(s.ctx, st.name, token, rows); err != nil {
		return s.fail(CloseHandlerError, "", fmt.Errorf("handling %s rows at token %d: %w", stream, token, err))
	}
	if st.pos == nil {
		st.pos = s.position(stream)
	}
	st.pos.Store(token)
	return nil
}

// dispatch handles one command from the server, on the read loop.
func (s *session) dispatch(cmd Command) error {
	c := s.c
	switch cmd := cmd.(type) {
	case ServerCommand:
		if c.cfg.ServerName != "" && cmd.ServerName != c.cfg.ServerName {
			return s.fail(CloseWrongRemote, "Wrong remote", fmt.Errorf("%w: expected %q, got %q", ErrWrongRemote, c.cfg.ServerName, cmd.ServerName))
		}
	case PositionCommand:
		if s.awaitingLogID {
			if err := s.logID(""); err != nil {
				return err
			}
		}
		s.position(cmd.Stream).Store(cmd.Token)
		if !s.explicit[cmd.Stream] && s.sentAll {
			c.mu.Lock()
			c.allStreams[cmd.Stream] = true
			c.mu.Unlock()
		}
		c.cfg.Handler.HandlePosition(cmd.Stream, cmd.Token)
		if s.waiting[cmd.Stream] {
			delete(s.waiting, cmd.Stream)
		} else if s.waitingAll {
			// The server sends the POSITIONs of ALL NOW together; the
			// first one means the subscription is done.
			s.waitingAll = false
		}
		if len(s.waiting) == 0 && !s.waitingAll {
			s.markCaughtUp()
		}
	case ErrorCommand:
		s.remoteErr = &RemoteError{Message: cmd.Message}
		c.log.Info("replication server reported an error", "error", cmd.Message)
	case SyncCommand:
		if s.awaitingLogID {
			if id, ok := strings.CutPrefix(cmd.Data, LogIDReplyPrefix); ok {
				return s.logID(id)
			}
			if cmd.Data == LogIDRequest {
				// Echoed by a server that has no log identity.
				return s.logID("")
			}
		}
		if h, ok := c.cfg.Handler.(SyncHandler); ok {
			h.HandleSync(cmd.Data)
		}
	}
	return nil
}

// logID hands the server's log id ("" for none) to OnLogID, once per
// connection, before anything of the streams is handled.
func (s *session) logID(id string) error {
	s.awaitingLogID = false
	if err := s.c.cfg.OnLogID(id); err != nil {
		return s.fail(CloseHandlerError, "", fmt.Errorf("checking the master's log id %q: %w", id, err))
	}
	return nil
}
