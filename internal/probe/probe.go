package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// Defaults for Config's zero values.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultHeartbeatWindow   = 5 * time.Minute
	// rateWindowDuration is how far back RowsPerSecond looks.
	rateWindowDuration = time.Minute
)

// Config configures a Probe.
type Config struct {
	// Address is the master's replication address, host:port (required).
	Address string
	// ServerName is the name the master must announce with SERVER
	// (required): a probe pointed at the wrong master says so.
	ServerName string
	// HTTPURL is the master's HTTP API base URL (e.g. http://master:8080),
	// read for the connection table. Empty for a master without one
	// (Synapse): the snapshot then says connections are unavailable.
	HTTPURL string
	// HeartbeatInterval is how often a heartbeat is sent and the connection
	// table read (default 5s).
	HeartbeatInterval time.Duration
	// StaleAfter is how long a heartbeat may stay unanswered before the
	// snapshot calls the heartbeat stale (default 3 x HeartbeatInterval).
	StaleAfter time.Duration
	// HeartbeatWindow is how far back p50/p99/max look (default 5m).
	HeartbeatWindow time.Duration
	Logger          logr.Logger
	// HTTPClient reads the connection table; one with a 5s timeout if nil.
	HTTPClient *http.Client
	// Registerer, if set, receives the probe's metrics while Run runs, and
	// the replication client's.
	Registerer prometheus.Registerer
	// MasterNamespace and MasterName name the master on the probe's
	// metrics (labels namespace and master; the operator gives its
	// ReplicationMaster's). Without MasterName the series carry
	// master=<Address>, for a probe that observes no resource.
	MasterNamespace, MasterName string
	// Dial replaces the TCP dialer (tests, TLS).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// InitialBackoff and MaxBackoff bound the reconnect delay (defaults of
	// the replication client: 100ms growing to 1s).
	InitialBackoff, MaxBackoff time.Duration
}

// Probe watches one master. It is safe for concurrent use: Snapshot may be
// called from any goroutine while Run runs.
type Probe struct {
	cfg    Config
	log    logr.Logger
	client *replication.Client
	// changed is signalled (without blocking) whenever something a waiter
	// could be waiting for happens: a state change, a heartbeat back, a
	// connection table read. Once waits on it instead of sleeping.
	changed chan struct{}
	running atomic.Bool // Run is running
	// caughtUp wakes the heartbeat loop so the first heartbeat of every
	// connection goes out at once rather than an interval later.
	caughtUp chan struct{}
	// refetch wakes the connection-table loop when the probe has caught
	// up on a new connection: only a table read after that lists the
	// probe's connection under its NAME (see tableFresh).
	refetch chan struct{}

	mu           sync.Mutex
	state        replication.ClientState
	everCaughtUp bool
	attempted    bool  // a connection attempt has finished, well or badly
	connErr      error // why the last connection ended; nil once caught up
	positions    map[string]int64
	rates        map[string]*rateWindow
	hb           *heartbeats
	httpFetched  bool // a connection table read has finished, well or badly
	httpErr      error
	conns        []Connection
	// caughtUps counts the connections that caught up. tableFresh says
	// the last table read began after the current one caught up, so the
	// master had read the probe's NAME (sent before REPLICATE) and the
	// table names the probe's own connection. A table read before then
	// lists it as "anon", and when the probe reaches the master through
	// a proxy (a Service, a load balancer) its remote address is not the
	// probe's local address either: nothing else tells it from a client.
	caughtUps  uint64
	tableFresh bool
	started    time.Time
	// oldest is the oldest token the master holds per stream, from
	// GET /v1/streams; nil when unknown.
	oldest    map[string]int64
	oldestErr error
	// localAddr is the local address of the current connection to the
	// master, to recognise it in the connection table.
	localAddr string
	// lastNewStream is when a stream was first seen (see allSettle).
	lastNewStream time.Time
	// runCtx is Run's context: a disconnect after it ended is the probe
	// stopping, not a fact about the master.
	runCtx context.Context
	// logID is the master's log identity (empty if it announces none);
	// logChangedFrom the previous one, once it changed.
	logID, logChangedFrom string
	// wentBack holds, per stream, the token seen before the stream's
	// token went backwards (a master whose log was reset or replaced).
	wentBack map[string]int64
}

// New checks cfg and returns a probe; Run connects it.
func New(cfg Config) (*Probe, error) {
	if cfg.Address == "" {
		return nil, errors.New("probe: no master address; give the replication address as host:port")
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return nil, fmt.Errorf("probe: master address %q: %w; give it as host:port", cfg.Address, err)
	}
	if cfg.ServerName == "" {
		return nil, errors.New("probe: no server name; give the name the master announces with SERVER (its serverName)")
	}
	if cfg.MasterNamespace != "" && cfg.MasterName == "" {
		return nil, fmt.Errorf("probe: master namespace %q without a master name; give the ReplicationMaster's name too, or neither", cfg.MasterNamespace)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 3 * cfg.HeartbeatInterval
	}
	if cfg.HeartbeatWindow <= 0 {
		cfg.HeartbeatWindow = DefaultHeartbeatWindow
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	hb, err := newHeartbeats(cfg.HeartbeatWindow)
	if err != nil {
		return nil, err
	}
	p := &Probe{
		cfg:       cfg,
		log:       cfg.Logger.WithName("probe").WithValues("master", cfg.Address),
		changed:   make(chan struct{}, 1),
		caughtUp:  make(chan struct{}, 1),
		refetch:   make(chan struct{}, 1),
		state:     replication.ClientConnecting,
		positions: map[string]int64{},
		rates:     map[string]*rateWindow{},
		wentBack:  map[string]int64{},
		hb:        hb,
		started:   time.Now(),
	}
	if p.client, err = p.newClient(); err != nil {
		return nil, err
	}
	return p, nil
}

// newClient builds the replication client: ALL NOW, then each stream
// resumed from its token. A new one starts over with ALL NOW (after the
// master's log changed, its old positions mean nothing).
func (p *Probe) newClient() (*replication.Client, error) {
	c, err := replication.NewClient(replication.ClientConfig{
		Address:    p.cfg.Address,
		ServerName: p.cfg.ServerName,
		Name:       ProbeName,
		// ALL NOW: the probe wants every stream's position, not history.
		// After the first POSITIONs the client resumes each stream from
		// its token, so no row is missed across reconnects.
		Streams:        []replication.StreamRequest{{Stream: replication.ReplicateAll, Now: true}},
		Handler:        (*handler)(p),
		Dial:           p.dial,
		Logger:         p.log,
		Registerer:     p.cfg.Registerer,
		InitialBackoff: p.cfg.InitialBackoff,
		MaxBackoff:     p.cfg.MaxBackoff,
		OnLogID:        p.observeLogID,
	})
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	return c, nil
}

// observeLogID records the master's log id. A different id than on an
// earlier connection means the master's log was replaced: its tokens
// started again, and the client's positions belong to the old log, so the
// client stops (ErrLogChanged) and Run starts a new one.
func (p *Probe) observeLogID(id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.logID
	if id == "" || id == prev {
		return nil
	}
	p.logID = id
	if prev == "" {
		return nil
	}
	p.logChangedFrom = prev
	p.log.Info("the master's log changed: its tokens started again; streams whose token went back are flagged", "from", prev, "to", id)
	return fmt.Errorf("%w: log %s replaced %s", replication.ErrLogChanged, id, prev)
}

// dial dials the master (with Config.Dial if set) and records the local
// address of the connection.
func (p *Probe) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := p.cfg.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.localAddr = c.LocalAddr().String()
	p.mu.Unlock()
	return c, nil
}

// Run connects to the master and keeps observing it until ctx ends, then
// returns nil. Connection problems do not end Run: the probe reconnects, and
// Snapshot reports them. It returns an error only if the probe cannot run at
// all (called twice at once, or its metrics cannot be registered).
func (p *Probe) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("probe: Run is already running for this probe; create another with New")
	}
	defer p.running.Store(false)
	if p.cfg.Registerer != nil {
		c := newCollector(p)
		if err := p.cfg.Registerer.Register(c); err != nil {
			return fmt.Errorf("probe: register metrics for master %v: %w; run one probe per master on a registry", p.cfg.metricLabels(), err)
		}
		defer p.cfg.Registerer.Unregister(c)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	p.runCtx = ctx
	p.mu.Unlock()
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() {
		for {
			p.mu.Lock()
			client := p.client
			p.mu.Unlock()
			err := client.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, replication.ErrLogChanged) {
				// Observe the new log from its current positions.
				next, nerr := p.newClient()
				if nerr == nil {
					p.mu.Lock()
					p.client = next
					p.mu.Unlock()
					continue
				}
				err = nerr
			}
			// Otherwise the client only returns early on misuse.
			runErr = err
			cancel()
			return
		}
	})
	wg.Go(func() { p.heartbeatLoop(ctx) })
	if p.cfg.HTTPURL != "" {
		wg.Go(func() { p.connectionsLoop(ctx) })
	}
	wg.Wait()
	// Keep-alive connections to the HTTP API would outlive the probe.
	p.cfg.HTTPClient.CloseIdleConnections()
	if runErr != nil {
		return fmt.Errorf("probe: %w", runErr)
	}
	return nil
}

func (p *Probe) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.caughtUp:
		}
		p.sendHeartbeat()
	}
}

// sendHeartbeat sends one INVALIDATE_CACHE heartbeat, but only while the
// connection is caught up: a heartbeat queued while disconnected would time
// the outage, not the relay.
func (p *Probe) sendHeartbeat() {
	p.mu.Lock()
	if p.state != replication.ClientCaughtUp {
		p.mu.Unlock()
		return
	}
	key := p.hb.next(time.Now())
	client := p.client
	p.mu.Unlock()
	keys, err := json.Marshal([]string{key})
	if err != nil {
		p.log.Error(err, "encoding a heartbeat key")
		return
	}
	if err := client.Send(replication.InvalidateCacheCommand{CacheFunc: HeartbeatCacheName, Keys: keys}); err != nil {
		p.log.Error(err, "sending a heartbeat")
	}
}

func (p *Probe) connectionsLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		p.mu.Lock()
		own := p.localAddr
		caughtUps, caughtUp := p.caughtUps, p.state == replication.ClientCaughtUp
		p.mu.Unlock()
		conns, err := fetchConnections(ctx, p.cfg.HTTPClient, p.cfg.HTTPURL, own)
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		if err != nil && (p.httpErr == nil || !p.httpFetched) {
			p.log.Info("cannot read the master's connection table", "error", err.Error())
		}
		p.httpFetched, p.httpErr = true, err
		p.tableFresh = caughtUp && caughtUps == p.caughtUps
		if err == nil {
			p.conns = conns
		} else {
			p.conns = nil
		}
		p.mu.Unlock()
		// The oldest tokens are extra: a master that cannot list them
		// (Synapse, an older tcprepl) still has its connection table.
		oldest, oerr := fetchOldestTokens(ctx, p.cfg.HTTPClient, p.cfg.HTTPURL)
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		if oerr != nil && p.oldestErr == nil {
			p.log.V(1).Info("cannot read the master's oldest tokens", "error", oerr.Error())
		}
		p.oldest, p.oldestErr = oldest, oerr
		p.mu.Unlock()
		p.notify()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.refetch:
		}
	}
}

func (p *Probe) notify() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// Snapshot returns what the probe knows now.
func (p *Probe) Snapshot() Snapshot {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{
		MeasuredAt: now,
		Reachable:  p.state == replication.ClientCaughtUp,
		Address:    p.cfg.Address,
		Heartbeat:  p.hb.stats(now, p.cfg.StaleAfter),
	}
	if p.everCaughtUp {
		// The client checked SERVER against this name, so it is what the
		// master announced.
		s.ServerName = p.cfg.ServerName
	}
	s.LogID, s.LogChangedFrom = p.logID, p.logChangedFrom
	for name, tok := range p.positions {
		sp := StreamPosition{Name: name, Token: tok, WentBackFrom: p.wentBack[name], OldestToken: p.oldest[name]}
		if r := p.rates[name]; r != nil {
			sp.RowsPerSecond = r.rate(now)
		}
		s.Streams = append(s.Streams, sp)
	}
	slices.SortFunc(s.Streams, func(a, b StreamPosition) int { return strings.Compare(a.Name, b.Name) })
	if p.cfg.HTTPURL != "" && p.httpFetched && p.httpErr == nil {
		s.ConnectionsAvailable = true
		// Filtered again here: a table fetched while the probe was still
		// dialing lists the probe's own connection, unnamed, before its
		// local address was known.
		for _, c := range p.conns {
			if !isProbeConnection(c, p.localAddr) {
				s.Connections = append(s.Connections, c)
			}
		}
	}
	switch {
	case !s.Reachable && p.connErr != nil:
		s.Error = p.connErr
	case !s.Reachable:
		s.Error = fmt.Errorf("%w: %s: not connected yet (%s)", ErrUnreachable, p.cfg.Address, p.state)
	case p.httpErr != nil:
		s.Error = p.httpErr
	}
	// A reset log is a warning, not an error: the master works (an
	// ephemeral master's restart is expected), but workers resuming from
	// the old log's positions must resync.
	if len(p.wentBack) > 0 || p.logChangedFrom != "" {
		s.Warnings = append(s.Warnings, p.logResetError().Error())
	}
	if s.Error != nil {
		s.ErrorMessage = s.Error.Error()
	}
	return s
}

// logResetError describes a master whose log was reset; p.mu is held.
func (p *Probe) logResetError() error {
	var streams []string
	for name, from := range p.wentBack {
		streams = append(streams, fmt.Sprintf("%s %d -> %d", name, from, p.positions[name]))
	}
	slices.Sort(streams)
	what := "its log id changed from " + p.logChangedFrom + " to " + p.logID
	if len(streams) > 0 {
		what = "stream tokens went backwards (" + strings.Join(streams, ", ") + ")"
		if p.logChangedFrom != "" {
			what += " and its log id changed from " + p.logChangedFrom + " to " + p.logID
		}
	}
	return fmt.Errorf("%w: %s: %s; workers that saved positions in the old log must resync (tcprepl worker --resync)", ErrLogReset, p.cfg.Address, what)
}

// observeToken records a stream's token, flagging one that went backwards;
// p.mu is held.
func (p *Probe) observeToken(stream string, token int64) {
	if prev, ok := p.positions[stream]; ok && token < prev {
		p.wentBack[stream] = prev
		p.log.Info("a stream's token went backwards: the master's log was reset or replaced", "stream", stream, "from", prev, "to", token)
	}
	p.positions[stream] = token
}

// allSettle is how long no new stream may appear before Once trusts that it
// has every stream. The master sends the POSITIONs of REPLICATE ALL NOW back
// to back, but the protocol does not say how many there are, and the client
// reports caught up at the first.
const allSettle = 100 * time.Millisecond

// complete reports whether a first picture is in: caught up, every stream's
// POSITION (none new for allSettle; wait says how long until then), a
// heartbeat back, and the connection table read (if there is one to read).
// failed reports a connection attempt that ended before the probe ever
// caught up.
func (p *Probe) complete() (complete, failed bool, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.everCaughtUp {
		return false, p.attempted && p.connErr != nil, 0
	}
	// A connection table read before the probe caught up may list the
	// probe's own connection, unnamed: wait for one read after (a failed
	// read is an answer too).
	http := p.cfg.HTTPURL == "" || (p.httpFetched && (p.httpErr != nil || p.tableFresh))
	if p.state != replication.ClientCaughtUp || p.hb.lastSeen.IsZero() || !http {
		return false, false, 0
	}
	if d := allSettle - time.Since(p.lastNewStream); d > 0 {
		return false, false, d
	}
	return true, false, 0
}

// Once runs a probe until it has a first complete picture of the master (or
// a connection attempt fails, or wait passes) and returns its snapshot. The
// error is the snapshot's Error: nil only if all was well.
func Once(ctx context.Context, cfg Config, wait time.Duration) (Snapshot, error) {
	// The CLI wants an answer, not a reconnecting loop: one failed attempt
	// is the answer.
	p, err := New(cfg)
	if err != nil {
		return Snapshot{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	settle := time.NewTimer(time.Hour)
	defer settle.Stop()
wait:
	for {
		complete, failed, after := p.complete()
		if complete || failed {
			break
		}
		if after > 0 {
			settle.Reset(after)
		}
		select {
		case <-p.changed:
		case <-settle.C:
		case <-ctx.Done():
			break wait
		case err := <-done:
			// Run only ends early when it cannot run at all.
			if err != nil {
				return p.Snapshot(), err
			}
			return p.Snapshot(), p.Snapshot().Error
		}
	}
	snap := p.Snapshot()
	cancel()
	if err := <-done; err != nil {
		return snap, err
	}
	return snap, snap.Error
}

// handler receives the replication client's callbacks. It is a distinct
// type so these methods are not part of Probe's API.
type handler Probe

func (h *handler) HandleRows(_ context.Context, stream string, token int64, rows []json.RawMessage) error {
	p := (*Probe)(h)
	now := time.Now()
	p.mu.Lock()
	p.observeToken(stream, token)
	p.rateFor(stream, now).add(now, len(rows))
	matched := false
	if stream == "caches" {
		for _, row := range rows {
			if key, ok := heartbeatKey(row); ok {
				if d, ok := p.hb.observe(key, now); ok {
					matched = true
					p.log.V(1).Info("heartbeat", "latency", d)
				}
			}
		}
	}
	p.mu.Unlock()
	if matched {
		p.notify()
	}
	// The probe never refuses rows: it only observes.
	return nil
}

// rateFor returns the stream's rate window, creating it; p.mu is held.
func (p *Probe) rateFor(stream string, now time.Time) *rateWindow {
	r := p.rates[stream]
	if r == nil {
		r = &rateWindow{window: rateWindowDuration, start: now}
		p.rates[stream] = r
	}
	return r
}

// heartbeatKey extracts the key of a heartbeat from a caches row
// [cache_func, keys, invalidation_ts]; ok is false for any other row.
func heartbeatKey(row json.RawMessage) (string, bool) {
	// Cheap test first: most caches rows are Synapse's own invalidations.
	if !bytes.Contains(row, []byte(HeartbeatCacheName)) {
		return "", false
	}
	var fields []json.RawMessage
	if err := json.Unmarshal(row, &fields); err != nil || len(fields) < 2 {
		return "", false
	}
	var fn string
	if err := json.Unmarshal(fields[0], &fn); err != nil || fn != HeartbeatCacheName {
		return "", false
	}
	var keys []string
	if err := json.Unmarshal(fields[1], &keys); err != nil || len(keys) != 1 {
		return "", false
	}
	return keys[0], true
}

func (h *handler) HandlePosition(stream string, token int64) {
	p := (*Probe)(h)
	now := time.Now()
	p.mu.Lock()
	if _, known := p.positions[stream]; !known {
		p.lastNewStream = now
	}
	p.observeToken(stream, token)
	p.rateFor(stream, now)
	p.mu.Unlock()
}

func (h *handler) HandleConnectionState(state replication.ClientState, err error) {
	p := (*Probe)(h)
	p.mu.Lock()
	p.state = state
	switch state {
	case replication.ClientCaughtUp:
		if !p.everCaughtUp || p.connErr != nil {
			p.log.Info("connected to master and caught up")
		}
		p.everCaughtUp, p.attempted, p.connErr = true, true, nil
		p.caughtUps++
		p.tableFresh = false
	case replication.ClientDisconnected:
		p.hb.forget()
		// A changed log is not a connection failure: Run starts a new
		// client for it, and the snapshot reports the reset.
		if err != nil && !errors.Is(err, replication.ErrLogChanged) && (p.runCtx == nil || p.runCtx.Err() == nil) {
			p.attempted = true
			classified := classify(p.cfg, err)
			if p.connErr == nil || p.connErr.Error() != classified.Error() {
				p.log.Info("master connection lost; reconnecting", "error", classified.Error())
			}
			p.connErr = classified
		}
	}
	p.mu.Unlock()
	if state == replication.ClientCaughtUp {
		select {
		case p.caughtUp <- struct{}{}:
		default:
		}
		select {
		case p.refetch <- struct{}{}:
		default:
		}
	}
	p.notify()
}

// classify wraps a connection error in the probe's named error for it, and
// says what to check.
func classify(cfg Config, err error) error {
	var remote *replication.RemoteError
	var perr *replication.ProtocolError
	switch {
	case errors.Is(err, replication.ErrWrongRemote):
		return fmt.Errorf("%w: %s is not the master called %q: %w; check the server name", ErrWrongServerName, cfg.Address, cfg.ServerName, err)
	case errors.As(err, &remote) && strings.Contains(remote.Message, "shutting down"):
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, cfg.Address, err)
	case errors.As(err, &remote):
		return fmt.Errorf("%w: %s reported: %w", ErrProtocol, cfg.Address, err)
	case errors.As(err, &perr):
		return fmt.Errorf("%w: %s sent a line the protocol does not allow: %w; is this a replication port?", ErrProtocol, cfg.Address, err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, cfg.Address, err)
	}
}
