package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/backoff"
)

// ServerConfig configures a Server. Zero values take the protocol's defaults.
type ServerConfig struct {
	// ServerName is sent as "SERVER <name>"; clients check it.
	ServerName string
	// MaxLineLength is the longest line accepted or sent, without its
	// newline (default 16384).
	MaxLineLength int
	// MaxPendingCommands is the slow-consumer limit: a connection with more
	// commands than this not yet written to its socket when live rows
	// arrive gets "ERROR Failed to keep up" and is closed (default 10000).
	MaxPendingCommands int
	// WriteTimeout is the deadline of one flush of a connection's queue; a
	// socket that accepts nothing for this long is closed (default 10s).
	WriteTimeout time.Duration
	// PingInterval and PingTimeout are the keep-alive (defaults 5s, 25s).
	PingInterval time.Duration
	PingTimeout  time.Duration
	// MaxPendingBytes is the slow-consumer limit in bytes: a connection with
	// more than this queued behind the write in progress when live rows
	// arrive is closed like one over MaxPendingCommands (default 8 MiB; an
	// update that finds the queue empty is always taken, whatever its size).
	// Catch-up fills at most half of either limit.
	MaxPendingBytes int
	// MaxCatchUpBytes bounds the catch-up pages that all connections
	// together hold at once, read from the Source and not yet written to
	// their sockets (default 64 MiB). Subscriptions wait for room.
	MaxCatchUpBytes int
	// CatchUpPageRows is the most rows a subscription's catch-up reads from
	// the Source at a time (default 1000); pages hold fewer when rows are
	// large, aiming at min(1 MiB, MaxPendingBytes/4).
	CatchUpPageRows int
	// Clock drives keep-alive; nil is the real clock.
	Clock Clock
	// Logger receives connection events; the zero Logger discards them.
	Logger logr.Logger
	// Registerer receives the Synapse-named metrics; nil registers none.
	Registerer prometheus.Registerer

	// Bounds on what unauthenticated clients control (issue 11). Zero
	// means unbounded (the 2020 protocol had no such bounds).
	//
	// MaxConnections: a connection beyond it gets "ERROR too many
	// connections ..." and is closed at once.
	MaxConnections int
	// IdentifyTimeout closes a connection that has sent neither NAME nor
	// REPLICATE this long after connecting (real time, not Clock).
	IdentifyTimeout time.Duration
	// MaxNameLength refuses a longer NAME with an ERROR and a close.
	MaxNameLength int

	// IdentifyPeer, if set, establishes who each client is before the
	// connection starts (access.go); nil makes every client an
	// unauthenticated "plaintext" peer.
	IdentifyPeer IdentifyPeer
	// Authorizer, if set, is asked before a command with effects is handled
	// and before a stream is subscribed; nil allows everything (the 2020
	// protocol).
	Authorizer Authorizer
}

// Close reasons of the bounds above (synapse_..._close_reason{reason_type}).
const (
	CloseTooManyConnections = "too_many_connections"
	CloseIdentifyTimeout    = "identify_timeout"
	CloseNameTooLong        = "name_too_long"
)

// LogIdentity is implemented by a Source whose log has an identity: a
// random id made with the log and kept across restarts, new when the log is
// new (streamlog.Log). The server announces it to clients that ask (see
// LogIDRequest).
type LogIdentity interface {
	LogID() string
}

// The log-id extension (docs/protocol.md, "Log identity"). A client that
// wants the server's log id sends "SYNC tcprepl-log-id" before its
// REPLICATEs; a tcprepl server answers "SYNC tcprepl-log-id=<id>" on that
// connection, before any RDATA or POSITION. Nothing is sent to a client that
// did not ask, so a 2020 Synapse worker sees exactly the 2020 protocol.
const (
	LogIDRequest     = "tcprepl-log-id"
	LogIDReplyPrefix = LogIDRequest + "="
)

// Handler receives what clients send that is not protocol control (NAME,
// PING and REPLICATE are handled by the server itself).
type Handler interface {
	// HandleCommand handles USER_SYNC, FEDERATION_ACK, REMOVE_PUSHER,
	// INVALIDATE_CACHE, USER_IP, SYNC and ERROR from a client. It runs on the
	// connection's read loop, so a connection's commands are handled in
	// order and a slow handler only slows that connection's reading (one
	// blocked for longer than the ping timeout gets it timed out). A
	// returned error is sent to the client as "ERROR <text>"; the connection
	// stays open (call ServerConn.CloseWithError to close it).
	HandleCommand(conn *ServerConn, cmd Command) error
	// ConnectionClosed is called once per connection after it has closed
	// and left the connection table; reason is one of the Close* constants.
	ConnectionClosed(conn *ServerConn, reason string)
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("replication server closed")

// Server is the master side of the protocol: it accepts clients, subscribes
// them to streams read from a Source, and fans published rows out to them.
type Server struct {
	cfg     ServerConfig
	src     Source
	h       Handler
	metrics *metrics
	// baseConnCfg holds the connection settings SetLive does not change;
	// live holds the ones it does (live.go).
	baseConnCfg connConfig
	live        atomic.Pointer[liveState]
	log         logr.Logger
	// catchUp is the budget of catch-up pages held by all connections.
	catchUp *byteBudget
	// pageBytes is the size a catch-up page aims at.
	pageBytes int
	// pages shares catch-up pages between connections reading the same
	// range, each charged once to catchUp.
	pages *pageCache

	nextID atomic.Uint64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*ServerConn]struct{}
	closed    bool
	connWG    sync.WaitGroup

	// fanout maps each stream to the connections subscribed or subscribing
	// to it. The map is replaced, never changed, so Publish reads it without
	// a lock; lists grow in place only past every older map's length (see
	// addFanout).
	fanout atomic.Pointer[map[string][]*streamSlot]
}

func (cfg *ServerConfig) setDefaults() {
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.MaxPendingCommands <= 0 {
		cfg.MaxPendingCommands = DefaultMaxPendingCommands
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.MaxCatchUpBytes <= 0 {
		cfg.MaxCatchUpBytes = DefaultMaxCatchUpBytes
	}
	if cfg.CatchUpPageRows <= 0 {
		cfg.CatchUpPageRows = DefaultCatchUpPageRows
	}
	cfg.Clock = clockOrReal(cfg.Clock)
}

// NewServer returns a server publishing src's streams. h may be nil, in
// which case client commands with effects are answered with an ERROR.
func NewServer(cfg ServerConfig, src Source, h Handler) (*Server, error) {
	if src == nil {
		return nil, errors.New("replication: NewServer needs a Source")
	}
	if cfg.ServerName == "" {
		return nil, errors.New("replication: ServerConfig.ServerName is required (clients check it)")
	}
	if err := checkText("server name", cfg.ServerName); err != nil {
		return nil, fmt.Errorf("replication: ServerConfig.ServerName: %w", err)
	}
	cfg.setDefaults()
	m, err := metricsFor(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		src:       src,
		h:         h,
		metrics:   m,
		log:       cfg.Logger.WithName("replication-server"),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*ServerConn]struct{}{},
		catchUp:   newByteBudget(int64(cfg.MaxCatchUpBytes)),
		pageBytes: max(min(DefaultCatchUpPageBytes, cfg.MaxPendingBytes/4), 1),
	}
	s.pages = newPageCache(src, s.catchUp, s.pageBytes, cfg.MaxLineLength, s.log, m)
	s.baseConnCfg = connConfig{
		maxLineLength: cfg.MaxLineLength,
		limits:        queueLimits{cmds: cfg.MaxPendingCommands, bytes: cfg.MaxPendingBytes},
		pages:         s.pages,
		writeTimeout:  cfg.WriteTimeout,
		pingInterval:  cfg.PingInterval,
		pingTimeout:   cfg.PingTimeout,
		clock:         cfg.Clock,
		logger:        s.log,
		metrics:       m,
		inboundOK:     SentByClient,
	}
	s.storeLive(LiveSettings{
		MaxPendingCommands: cfg.MaxPendingCommands, MaxPendingBytes: cfg.MaxPendingBytes,
		WriteTimeout: cfg.WriteTimeout, PingInterval: cfg.PingInterval, PingTimeout: cfg.PingTimeout,
		MaxConnections: cfg.MaxConnections, IdentifyTimeout: cfg.IdentifyTimeout, MaxNameLength: cfg.MaxNameLength,
		Authorizer: cfg.Authorizer,
	})
	empty := map[string][]*streamSlot{}
	s.fanout.Store(&empty)
	m.addServer(s)
	return s, nil
}

// Serve accepts connections on ln until Shutdown, then returns
// ErrServerClosed. It may be called for several listeners.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	// Out of file descriptors and the like: wait and retry, as net/http
	// does, rather than stop serving for good.
	retry := backoff.New(5*time.Millisecond, time.Second)
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("replication server: listener %s closed: %w", ln.Addr(), err)
			}
			delay := retry.Next()
			s.log.Error(err, "accepting a replication connection; retrying", "delay", delay)
			time.Sleep(delay)
			continue
		}
		retry.Reset()
		if !s.startConn(nc) {
			_ = nc.Close()
		}
	}
}

func (s *Server) startConn(nc net.Conn) bool {
	sc := &ServerConn{s: s, remote: nc.RemoteAddr(), slots: map[string]*streamSlot{}}
	sc.ctx, sc.cancel = context.WithCancel(context.Background())
	live := s.live.Load()
	sc.c = newConn(live.connCfg, nc, s.nextID.Add(1), "anon")
	sc.c.dispatch = sc.dispatch
	sc.c.onClosing = sc.cancel

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sc.cancel()
		return false
	}
	if limit := live.maxConnections; limit > 0 && len(s.conns) >= limit {
		s.mu.Unlock()
		sc.cancel()
		s.refuseConn(nc, limit)
		return false
	}
	s.conns[sc] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	s.metrics.addConn(sc.c)

	if d := live.identifyTimeout; d > 0 {
		sc.identifyTimer = time.AfterFunc(d, sc.identifyExpired)
	}
	go func() {
		defer s.connWG.Done()
		var reason string
		var err error
		if ierr := sc.identifyPeer(nc); ierr != nil {
			reason, err = CloseIdentifyFailed, ierr
			_ = nc.Close()
			s.metrics.connClosed(reason)
		} else {
			// SERVER first, then PING so the client knows it may time us out.
			_ = sc.c.sendControl(ServerCommand{ServerName: s.cfg.ServerName})
			_ = sc.c.sendControl(PingCommand{Data: strconv.FormatInt(s.cfg.Clock.Now().UnixMilli(), 10)})
			reason, err = sc.c.run()
		}
		if sc.identifyTimer != nil {
			sc.identifyTimer.Stop()
		}
		sc.cancel()
		sc.subWG.Wait()
		s.metrics.removeConn(sc.c)
		s.removeConn(sc)
		s.log.V(1).Info("replication connection closed", "conn", sc.ID(), "name", sc.Name(), "peer", sc.Peer().String(), "reason", reason, "error", errString(err))
		if s.h != nil {
			s.h.ConnectionClosed(sc, reason)
		}
	}()
	return true
}

// refuseConn tells a connection over MaxConnections why it is refused, as
// the first and only line, and closes it. The write is bounded so that a
// peer that does not read cannot hold the accept loop.
func (s *Server) refuseConn(nc net.Conn, limit int) {
	s.metrics.connClosed(CloseTooManyConnections)
	s.log.V(1).Info("refusing a replication connection: too many connections", "remote", nc.RemoteAddr().String(), "maxConnections", limit)
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = fmt.Fprintf(nc, "ERROR too many connections: this server accepts at most %d (limits.maxConnections)\n", limit)
	_ = nc.Close()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Server) removeConn(sc *ServerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, sc)
	old := *s.fanout.Load()
	next := make(map[string][]*streamSlot, len(old))
	for stream, list := range old {
		kept := slices.DeleteFunc(slices.Clone(list), func(slot *streamSlot) bool { return slot.sc == sc })
		if len(kept) > 0 {
			next[stream] = kept
		}
	}
	s.fanout.Store(&next)
}

// addFanout makes Publish offer stream's updates to slot.
func (s *Server) addFanout(stream string, slot *streamSlot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.fanout.Load()
	if slices.Contains(old[stream], slot) {
		return
	}
	next := make(map[string][]*streamSlot, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	// Appending in place is safe: readers of the old map see only the
	// first len(old[stream]) slots, which are not modified, and only the
	// current map's lists are ever appended to (under s.mu; removeConn
	// builds new ones). It saves copying the whole list for each
	// subscriber, which for n subscribers was n²/2 pointers of garbage.
	next[stream] = append(old[stream], slot)
	s.fanout.Store(&next)
}

// Publish sends an update to every connection subscribed to its stream, and
// queues it for connections still subscribing. Call it in token order per
// stream, after the update is visible through the Source. The update's lines
// are encoded once and their bytes shared by every connection; rows are put
// on the wire as given (they must already be Python-style JSON, see Update).
// Publish never blocks on a connection: one that is too far behind is closed
// as a slow consumer.
func (s *Server) Publish(u Update) {
	item, lines := s.encodeUpdate(u)
	if lines == 0 {
		return
	}
	s.metrics.published(u.Stream, lines)
	for _, slot := range (*s.fanout.Load())[u.Stream] {
		slot.deliver(u.Token, item)
	}
}

// encodeUpdate renders an update's RDATA lines, skipping (and logging) rows
// that cannot go on the wire: empty, containing a newline, or longer than
// the line limit. The last row sent carries the numeric token, so a batch
// stays well-formed.
func (s *Server) encodeUpdate(u Update) (outItem, int) {
	b, n := appendUpdateLines(nil, u, s.cfg.MaxLineLength, s.log)
	return outItem{b: b, n: int32(n), cmd: idRdata}, n
}

// appendUpdateLines appends the RDATA lines of u to dst and returns them with
// the number of lines.
func appendUpdateLines(dst []byte, u Update, maxLine int, log logr.Logger) ([]byte, int) {
	// The last row that can be sent gets the numeric token.
	last := -1
	for i := len(u.Rows) - 1; i >= 0; i-- {
		if CheckRDATARow(u.Stream, u.Rows[i], maxLine) == nil {
			last = i
			break
		}
	}
	// Size the buffer once: growing it line by line was most of the cost
	// of publishing a small update.
	need := 0
	for _, row := range u.Rows[:last+1] {
		need += maxRDATAOverhead + len(u.Stream) + len(row) + 1
	}
	dst = slices.Grow(dst, need)
	n := 0
	for i, row := range u.Rows[:last+1] {
		if i != last {
			if err := CheckRDATARow(u.Stream, row, maxLine); err != nil {
				log.Error(err, "skipping a row that cannot be sent as one RDATA line", "stream", u.Stream, "token", u.Token, "row", i, "bytes", len(row), "maxLineLength", maxLine)
				continue
			}
		}
		dst = appendRdataPrefix(dst, u.Stream, u.Token, i != last)
		dst = append(append(dst, row...), '\n')
		n++
	}
	if skipped := len(u.Rows) - 1 - last; skipped > 0 {
		log.Error(errLineTooLong, "skipping rows that cannot be sent as RDATA lines", "stream", u.Stream, "token", u.Token, "rows", skipped)
	}
	return dst, n
}

// Connections returns a snapshot of every live connection, by ID.
func (s *Server) Connections() []ConnectionInfo {
	s.mu.Lock()
	conns := make([]*ServerConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	infos := make([]ConnectionInfo, 0, len(conns))
	for _, sc := range conns {
		infos = append(infos, sc.Info())
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].ID < infos[j].ID })
	return infos
}

// Shutdown stops accepting, sends "ERROR server shutting down" to every
// connection and closes them once their queues are flushed. It returns when
// all connections have closed, or with ctx's error after closing the
// remaining sockets abruptly.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	conns := make([]*ServerConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	s.metrics.removeServer(s)
	for _, sc := range conns {
		sc.c.closeWith(CloseShutdown, "server shutting down", false, errors.New("server shutting down"))
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, sc := range conns {
			sc.c.shutNet()
		}
		<-done
		return fmt.Errorf("replication server shutdown: connections did not flush in time: %w", ctx.Err())
	}
}

// ConnectionInfo describes one connection, for the master's connection table.
type ConnectionInfo struct {
	ID              uint64
	Name            string
	Peer            Peer
	RemoteAddr      string
	State           ConnState
	ConnectedSince  time.Time
	Subscriptions   []SubscriptionInfo
	PendingCommands int
	PendingBytes    int
	CommandsIn      map[string]uint64
	CommandsOut     map[string]uint64
	BytesIn         uint64
	BytesOut        uint64
	LastReceived    time.Time
}

// SubscriptionInfo is one stream a connection replicates.
type SubscriptionInfo struct {
	Stream string
	// State is "connecting" while catching up, "subscribed" once live.
	State string
	// LastToken is the last numeric token sent on this stream (RDATA or
	// POSITION); before any, the token the client asked to start after.
	LastToken int64
}

// ServerConn is one client connection of a Server.
type ServerConn struct {
	s      *Server
	c      *conn
	remote net.Addr
	ctx    context.Context
	cancel context.CancelFunc
	subWG  sync.WaitGroup

	// slots holds the subscription of each stream, guarded by c.mu, so
	// that a delivery sees a subscription's state and queues in one step.
	slots map[string]*streamSlot

	// identified is set by the first NAME or REPLICATE; identifyTimer
	// closes the connection if that has not happened in time.
	identified    atomic.Bool
	identifyTimer *time.Timer

	// peer is set once, by identifyPeer, before the connection runs; the
	// connection table may read it earlier (nil: a plaintext peer).
	peer atomic.Pointer[Peer]
}

// identifyPeer runs the server's IdentifyPeer hook, aborted by a close
// (shutdown, the identify timeout) through sc.ctx.
func (sc *ServerConn) identifyPeer(nc net.Conn) error {
	id := sc.s.cfg.IdentifyPeer
	if id == nil {
		return nil
	}
	p, err := id(sc.ctx, nc)
	if err != nil {
		sc.s.log.V(1).Info("replication client not identified; closing", "conn", sc.ID(), "remote", sc.remote.String(), "error", err.Error())
		return fmt.Errorf("identify the client: %w", err)
	}
	sc.peer.Store(&p)
	return nil
}

// identifyExpired closes a connection that never said who it is.
func (sc *ServerConn) identifyExpired() {
	if sc.identified.Load() {
		return
	}
	d := sc.s.live.Load().identifyTimeout
	sc.c.closeWith(CloseIdentifyTimeout, fmt.Sprintf("no NAME or REPLICATE within %s (limits.identifyTimeout)", d), false,
		fmt.Errorf("the client sent neither NAME nor REPLICATE within %s", d))
}

// identify records that the client named itself or subscribed.
func (sc *ServerConn) identify() {
	if sc.identified.CompareAndSwap(false, true) && sc.identifyTimer != nil {
		sc.identifyTimer.Stop()
	}
}

// ID is unique among the server's connections.
func (sc *ServerConn) ID() uint64 { return sc.c.id }

// Name is the name the client gave with NAME ("anon" before that).
func (sc *ServerConn) Name() string { return sc.c.getName() }

// RemoteAddr is the client's address.
func (sc *ServerConn) RemoteAddr() net.Addr { return sc.remote }

// Send queues a command for the client, e.g. an ERROR. It fails if the line
// would be over the line limit or the connection is closing.
func (sc *ServerConn) Send(cmd Command) error {
	if cmd == nil || !SentByServer(cmd.Name()) {
		return fmt.Errorf("replication: a server cannot send %s", commandName(cmd))
	}
	return sc.c.sendControl(cmd)
}

// CloseWithError sends "ERROR <text>" after what is queued and closes.
func (sc *ServerConn) CloseWithError(text string) {
	sc.c.closeWith(CloseRequested, text, false, errors.New(text))
}

// Info returns a snapshot of the connection.
func (sc *ServerConn) Info() ConnectionInfo {
	st := sc.c.stats()
	info := ConnectionInfo{
		ID:              sc.c.id,
		Name:            st.name,
		Peer:            sc.Peer(),
		RemoteAddr:      sc.remote.String(),
		State:           st.state,
		ConnectedSince:  sc.c.connectedSince,
		PendingCommands: st.pendingCommands,
		PendingBytes:    st.pendingBytes,
		CommandsIn:      st.commandsIn,
		CommandsOut:     st.commandsOut,
		BytesIn:         st.bytesIn,
		BytesOut:        st.bytesOut,
		LastReceived:    st.lastReceived,
	}
	sc.c.mu.Lock()
	for _, slot := range sc.slots {
		sub := slot.sub
		state := "connecting"
		if sub.state == subLive {
			state = "subscribed"
		}
		info.Subscriptions = append(info.Subscriptions, SubscriptionInfo{Stream: sub.stream, State: state, LastToken: sub.lastToken})
	}
	sc.c.mu.Unlock()
	sort.Slice(info.Subscriptions, func(i, j int) bool { return info.Subscriptions[i].Stream < info.Subscriptions[j].Stream })
	return info
}

// dispatch handles one command from the client, on the read loop.
func (sc *ServerConn) dispatch(cmd Command) error {
	switch cmd := cmd.(type) {
	case NameCommand:
		if limit := sc.s.live.Load().maxNameLength; limit > 0 && len(cmd.ClientName) > limit {
			err := fmt.Errorf("NAME is %d bytes, the limit is %d (limits.maxNameLength)", len(cmd.ClientName), limit)
			return &dispatchError{reason: CloseNameTooLong, errText: err.Error(), err: err}
		}
		sc.c.setName(cmd.ClientName)
		sc.identify()
		return nil
	case ReplicateCommand:
		sc.identify()
		return sc.replicate(cmd)
	case SyncCommand:
		if cmd.Data == LogIDRequest {
			if li, ok := sc.s.src.(LogIdentity); ok {
				return sc.Send(SyncCommand{Data: LogIDReplyPrefix + li.LogID()})
			}
			// No identity: the request falls through to the handler,
			// whose echo tells the client that none is announced.
		}
	case ErrorCommand:
		sc.s.log.Info("replication client reported an error", "conn", sc.ID(), "name", sc.Name(), "error", cmd.Message)
	}
	sc.s.metrics.clientCommand(cmd.Name())
	if err := sc.authorizeCommand(cmd.Name()); err != nil {
		sc.s.log.V(1).Info("refused a command from a replication client", "conn", sc.ID(), "name", sc.Name(), "peer", sc.Peer().String(), "command", cmd.Name())
		return sc.Send(ErrorCommand{Message: string(sanitizeText(err.Error()))})
	}
	if sc.s.h == nil {
		if cmd.Name() == CmdError || cmd.Name() == CmdSync {
			return nil
		}
		return sc.Send(ErrorCommand{Message: "this server does not handle " + cmd.Name()})
	}
	if err := sc.s.h.HandleCommand(sc, cmd); err != nil {
		if serr := sc.Send(ErrorCommand{Message: string(sanitizeText(err.Error()))}); serr != nil {
			sc.s.log.Error(serr, "sending a handler error to a replication client", "conn", sc.ID(), "handlerError", err.Error())
		}
	}
	return nil
}
