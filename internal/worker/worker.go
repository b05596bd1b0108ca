package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// AllStreams asks for every stream the master publishes (REPLICATE ALL NOW).
const AllStreams = replication.ReplicateAll

// Named connection errors, as Status reports them.
var (
	// ErrMasterUnreachable: the master could not be dialed or the
	// connection was lost; the worker keeps retrying.
	ErrMasterUnreachable = errors.New("master unreachable")
	// ErrWrongServerName: the master announced another SERVER name; the
	// worker keeps retrying, but --server-name (or the master) needs fixing.
	ErrWrongServerName = errors.New("wrong server name")
	// ErrMasterRefused: the master sent ERROR (e.g. a token older than its
	// retention, an unknown stream).
	ErrMasterRefused = errors.New("master refused")
	// ErrLogChanged: the master serves another log than the one the saved
	// positions belong to (its log was wiped or replaced, and its tokens
	// started again from 1). The worker stops rather than skip the new
	// log's first rows; see Config.Resync.
	ErrLogChanged = replication.ErrLogChanged
)

// Config configures a Worker.
type Config struct {
	// Address is the master's replication address, host:port (required).
	Address string
	// ServerName is the name the master must announce (required).
	ServerName string
	// Name is sent with NAME, so the master's connection table shows it;
	// the host name when empty.
	Name string
	// Streams to replicate, or just AllStreams (required).
	Streams []string
	// StateDir keeps the positions; it must survive restarts (required).
	StateDir string
	// Sink is where rows go: "stdout", "file:PATH" or "http:URL" (required).
	Sink string
	// From is the token to start after for streams that have no saved
	// position; nil starts them from now (only future rows).
	From *int64
	// Resync drops the saved positions and the master log id they belong
	// to before starting, and starts every stream after From (0, the whole
	// retained log, when From is nil). It is the way out of ErrLogChanged;
	// give it once, for the restart after that error.
	Resync bool
	// ResyncOnLogChange makes the worker resync by itself (as Resync does,
	// without a restart) when the master's log changes, instead of
	// stopping with ErrLogChanged. For workers whose positions may be
	// replayed without harm, e.g. pods that a supervisor would otherwise
	// restart into the same error forever.
	ResyncOnLogChange bool
	// KeepHeartbeats hands the operator probe's heartbeat rows (caches
	// rows of the reserved cache replication.HeartbeatCacheName) to the
	// sink too. By default they are left out: they invalidate nothing and
	// arrive every few seconds on every master the operator watches.
	KeepHeartbeats bool

	Logger logr.Logger
	// Registerer receives the worker's metrics and the replication
	// client's; none are registered when nil.
	Registerer prometheus.Registerer
	// Stdout is the stdout sink's writer (os.Stdout when nil).
	Stdout io.Writer
	// HTTPSink tunes the HTTP sink (client, retry backoff).
	HTTPSink HTTPSinkConfig
	// SaveInterval is how often positions are saved while rows flow
	// (default 100ms); they are also saved on every POSITION and on stop.
	// A crash loses at most this much progress: the file sink reads it
	// back from the file, the other sinks get those batches again. A
	// negative value saves after every batch.
	SaveInterval time.Duration
	// Dial, InitialBackoff and MaxBackoff tune the replication client.
	Dial                       func(ctx context.Context, network, addr string) (net.Conn, error)
	InitialBackoff, MaxBackoff time.Duration
}

// Worker replicates streams into a sink. Rows are handed to the sink one
// batch at a time, in order; a batch's token becomes the stream's durable
// position only after the sink accepted it.
type Worker struct {
	cfg     Config
	log     logr.Logger
	state   *State
	sink    Sink
	client  *replication.Client
	metrics *metrics

	mu        sync.Mutex
	connState replication.ClientState
	connErr   error
	sinkErr   error
	saveErr   error
	// delivered is the last token the sink accepted per stream (or that a
	// POSITION covered). It runs ahead of the saved positions until the
	// next save, and keeps a batch the master sends again after a
	// reconnect from reaching the sink twice.
	delivered map[string]int64
	// deliveredOffset is the file sink's size after the last delivery.
	deliveredOffset int64
	dirty           bool // delivered holds something not saved yet
	lastSave        time.Time
	saveMu          sync.Mutex // one save at a time
	started         atomic.Bool
	// fileSink is the sink when it is a file: positions are saved with
	// its offset so a restart can read back what came after.
	fileSink *FileSink
}

// Status is what the worker reports about itself.
type Status struct {
	// State is the connection state: connecting, connected, caught-up or
	// disconnected.
	State string
	// Ready is true once every stream has caught up and the sink takes rows.
	Ready bool
	// Positions holds the durable position of each stream.
	Positions map[string]int64
	// ConnectionError is why the last connection ended (nil once caught
	// up again); it wraps one of the Err* connection errors.
	ConnectionError error
	// SinkError is the sink failure being retried, nil when healthy.
	SinkError error
	// StateError is a failure to save positions, nil when healthy.
	StateError error
}

// New checks cfg, opens the state dir and the sink, and reconciles the saved
// positions with what the sink already holds. Run starts replicating.
func New(cfg Config) (*Worker, error) {
	if cfg.Address == "" {
		return nil, errors.New("worker: no master address; pass --master HOST:PORT or set TCPREPL_MASTER_ADDRESS")
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return nil, fmt.Errorf("worker: master address %q: %w; give it as host:port", cfg.Address, err)
	}
	if cfg.ServerName == "" {
		return nil, errors.New("worker: no server name; pass --server-name or set TCPREPL_SERVER_NAME")
	}
	if len(cfg.Streams) == 0 {
		return nil, errors.New("worker: no streams; pass --streams a,b or --streams ALL")
	}
	all := slices.Contains(cfg.Streams, AllStreams)
	if all && len(cfg.Streams) > 1 {
		return nil, errors.New("worker: --streams ALL cannot be combined with named streams")
	}
	if all && cfg.From != nil {
		return nil, errors.New("worker: --from needs named --streams: the protocol replicates ALL only from NOW")
	}
	if all && cfg.Resync {
		return nil, errors.New("worker: --resync needs named --streams: the protocol replicates ALL only from NOW, which would skip the new log's rows")
	}
	if cfg.Resync && cfg.From == nil {
		cfg.From = new(int64)
	}
	if cfg.From != nil && *cfg.From < 0 {
		return nil, fmt.Errorf("worker: --from %d: tokens are not negative", *cfg.From)
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "tcprepl-worker"
		}
		cfg.Name = host
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.SaveInterval == 0 {
		cfg.SaveInterval = 100 * time.Millisecond
	}
	kind, arg, err := ParseSinkSpec(cfg.Sink)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w := &Worker{
		cfg:       cfg,
		log:       cfg.Logger.WithName("worker"),
		delivered: map[string]int64{},
		connState: replication.ClientConnecting,
	}
	w.metrics = newMetrics()
	if w.state, err = OpenState(cfg.StateDir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			w.close()
		}
	}()
	hs := cfg.HTTPSink
	userOnError := hs.OnError
	hs.OnError = func(err error) {
		w.metrics.sinkErrors.Inc()
		if userOnError != nil {
			userOnError(err)
		}
	}
	if hs.Logger.GetSink() == nil {
		hs.Logger = w.log.WithName("http-sink")
	}
	switch kind {
	case "stdout":
		w.sink = NewWriterSink("stdout", cfg.Stdout)
	case "file":
		fs, err := OpenFileSink(arg)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		w.sink, w.fileSink = fs, fs
	case "http":
		w.sink = NewHTTPSink(arg, hs)
	}
	if cfg.Resync {
		if err := w.resync(); err != nil {
			return nil, err
		}
	}
	if err := w.reconcile(); err != nil {
		return nil, err
	}
	if w.client, err = w.newClient(); err != nil {
		return nil, err
	}
	// Registered last, so a New that failed leaves the registry as it was.
	if err := w.metrics.register(cfg.Registerer); err != nil {
		return nil, err
	}
	for stream, tok := range w.state.Positions() {
		w.metrics.position.WithLabelValues(stream).Set(float64(tok))
	}
	ok = true
	return w, nil
}

// newClient builds the replication client from the saved positions.
func (w *Worker) newClient() (*replication.Client, error) {
	c, err := replication.NewClient(replication.ClientConfig{
		Address:        w.cfg.Address,
		ServerName:     w.cfg.ServerName,
		Name:           w.cfg.Name,
		Streams:        w.streamRequests(),
		Handler:        (*handler)(w),
		Dial:           w.cfg.Dial,
		Logger:         w.log,
		Registerer:     w.cfg.Registerer,
		InitialBackoff: w.cfg.InitialBackoff,
		MaxBackoff:     w.cfg.MaxBackoff,
		OnLogID:        w.checkLogID,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return c, nil
}

// resyncAfterLogChange is Config.ResyncOnLogChange: the positions of the
// old log are dropped and a new client replays the new log after From (0
// when unset).
func (w *Worker) resyncAfterLogChange() error {
	if w.cfg.From == nil && w.cfg.Streams[0] != AllStreams {
		w.cfg.From = new(int64)
	}
	w.mu.Lock()
	w.delivered, w.dirty = map[string]int64{}, false
	w.mu.Unlock()
	if err := w.resync(); err != nil {
		return err
	}
	c, err := w.newClient()
	if err != nil {
		return err
	}
	w.client = c
	return nil
}

// resync forgets the saved positions and log id (Config.Resync). What the
// file sink holds stays; the sink's current end marks it as older than the
// (now empty) positions, so it is not read back as positions.
func (w *Worker) resync() error {
	var offset *int64
	if w.fileSink != nil {
		size := w.fileSink.Size()
		offset = &size
	}
	from := "now (ALL)"
	if w.cfg.From != nil {
		from = strconv.FormatInt(*w.cfg.From, 10)
	}
	w.log.Info("resync: dropping the saved positions and master log id; replicating from the start", "positions", w.state.Positions(), "logId", w.state.LogID(), "after", from)
	if err := w.state.Reset(offset); err != nil {
		return fmt.Errorf("worker: resync: %w", err)
	}
	return nil
}

// checkLogID compares the master's log id with the one the saved positions
// belong to. A state without one (new, or saved before log ids) adopts it.
// It runs on the connection's read loop before any row is handled.
func (w *Worker) checkLogID(id string) error {
	if id == "" {
		w.log.V(1).Info("the master announces no log id; a reset of its log cannot be detected")
		return nil
	}
	saved := w.state.LogID()
	switch saved {
	case id:
		return nil
	case "":
		if err := w.state.SetLogID(id); err != nil {
			return fmt.Errorf("saving the master's log id: %w", err)
		}
		w.log.Info("recorded the master's log id with the positions", "logId", id)
		return nil
	}
	return fmt.Errorf("%w: the saved positions %v in %s belong to master log %s, but %s serves log %s (its log was wiped or replaced, so its tokens started again and resuming would skip its first rows); to resync, restart the worker once with --resync (it replays the master's new log after --from, default 0)",
		ErrLogChanged, w.state.Positions(), w.cfg.StateDir, saved, w.cfg.Address, id)
}

// reconcile brings the saved positions up to what the file sink holds:
// positions are saved with the file's size, and every whole batch after that
// offset is newer than them (the worker stopped before its next save).
func (w *Worker) reconcile() error {
	fs := w.fileSink
	if fs == nil {
		return nil
	}
	var ahead map[string]int64
	if off, ok := w.state.SinkOffset(); ok {
		var err error
		if ahead, err = fs.PositionsAfter(off); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	} else {
		// No offset saved yet (a new state dir, or one from before
		// offsets): the file's last batch is the best evidence.
		last, err := fs.Recover()
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		ahead = map[string]int64{}
		if last != nil {
			ahead[last.Stream] = last.Token
		}
	}
	saved := w.state.Positions()
	for stream, tok := range ahead {
		if tok > saved[stream] {
			w.log.Info("the sink file holds batches the saved positions lack (the worker stopped before saving); resuming after them",
				"stream", stream, "saved", saved[stream], "token", tok)
		}
	}
	size := fs.Size()
	w.deliveredOffset = size
	if err := w.state.Commit(ahead, &size); err != nil {
		return err
	}
	return nil
}

// streamRequests builds the REPLICATE requests: a stream with a saved
// position resumes after it; one without starts after --from, or now.
func (w *Worker) streamRequests() []replication.StreamRequest {
	saved := w.state.Positions()
	var reqs []replication.StreamRequest
	add := func(stream string) {
		switch tok, ok := saved[stream]; {
		case ok:
			reqs = append(reqs, replication.StreamRequest{Stream: stream, Token: tok})
		case w.cfg.From != nil:
			reqs = append(reqs, replication.StreamRequest{Stream: stream, Token: *w.cfg.From})
		default:
			reqs = append(reqs, replication.StreamRequest{Stream: stream, Now: true})
		}
	}
	if w.cfg.Streams[0] != AllStreams {
		for _, s := range w.cfg.Streams {
			add(s)
		}
		return reqs
	}
	if len(saved) == 0 {
		return []replication.StreamRequest{{Stream: AllStreams, Now: true}}
	}
	// ALL was subscribed before: resume each stream then learnt from its
	// saved position. The protocol offers ALL only from NOW, which would
	// skip what was published while the worker was down.
	for _, s := range slices.Sorted(maps.Keys(saved)) {
		add(s)
	}
	w.log.Info("resuming the streams ALL gave on first start from their saved positions; a stream the master added since is not replicated",
		"streams", len(saved))
	return reqs
}

// Run replicates until ctx ends, then closes the sink and the state dir and
// returns nil. Connection and sink failures do not end it: it retries, and
// Status and the logs say what is wrong. A Worker runs once: Run again
// returns an error and leaves it alone.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run was already called; a Worker runs once, create another with New")
	}
	defer w.close()
	w.log.Info("worker starting", "master", w.cfg.Address, "serverName", w.cfg.ServerName, "name", w.cfg.Name,
		"streams", w.cfg.Streams, "sink", w.sink.String(), "positions", w.state.Positions())
	var wg sync.WaitGroup
	flushCtx, stopFlush := context.WithCancel(context.Background())
	if w.cfg.SaveInterval > 0 {
		// Saves what a quiet stream delivered, without waiting for more.
		wg.Go(func() {
			t := time.NewTicker(w.cfg.SaveInterval)
			defer t.Stop()
			for {
				select {
				case <-flushCtx.Done():
					return
				case <-t.C:
					_ = w.saveDelivered() // logged and reported by Status
				}
			}
		})
	}
	err := w.client.Run(ctx)
	for ctx.Err() == nil && errors.Is(err, ErrLogChanged) && w.cfg.ResyncOnLogChange {
		w.log.Info("the master serves a new log; resyncing from it (--on-log-change=resync)", "error", err.Error())
		// Delivered positions of the old log must not be saved over the
		// reset; a save in flight finishes first.
		w.saveMu.Lock()
		rerr := w.resyncAfterLogChange()
		w.saveMu.Unlock()
		if rerr != nil {
			err = rerr
			break
		}
		err = w.client.Run(ctx)
	}
	stopFlush()
	wg.Wait()
	// The handler is done: save what it delivered last.
	if serr := w.saveDelivered(); serr != nil && ctx.Err() != nil {
		return fmt.Errorf("worker: saving positions on stop: %w", serr)
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("worker: %w", err)
}

func (w *Worker) close() {
	if w.sink != nil {
		if err := w.sink.Close(); err != nil {
			w.log.Error(err, "closing the sink", "sink", w.sink.String())
		}
	}
	if w.state != nil {
		if err := w.state.Close(); err != nil {
			w.log.Error(err, "closing the state dir")
		}
	}
}

// Status returns the worker's current state.
func (w *Worker) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Status{
		State:           w.connState.String(),
		Positions:       w.state.Positions(),
		ConnectionError: w.connErr,
		SinkError:       w.sinkErr,
		StateError:      w.saveErr,
	}
	if es, ok := w.sink.(interface{ Err() error }); ok && st.SinkError == nil {
		st.SinkError = es.Err()
	}
	st.Ready = w.connState == replication.ClientCaughtUp && st.SinkError == nil && st.StateError == nil
	return st
}

// handler receives the replication client's callbacks; a distinct type so
// they are not part of Worker's API. The client calls them one at a time.
type handler Worker

func (h *handler) HandleRows(ctx context.Context, stream string, token int64, rows []json.RawMessage) error {
	w := (*Worker)(h)
	w.metrics.rowsReceived.WithLabelValues(stream).Add(float64(len(rows)))
	w.mu.Lock()
	delivered, seen := w.delivered[stream]
	w.mu.Unlock()
	if saved, ok := w.state.Position(stream); ok && (!seen || saved > delivered) {
		delivered, seen = saved, true
	}
	if seen && token <= delivered {
		// Sent again after a reconnect: the sink has it already.
		w.metrics.duplicates.Inc()
		w.log.V(1).Info("skipping a batch the sink already has", "stream", stream, "token", token)
		return nil
	}
	if stream == "caches" && !w.cfg.KeepHeartbeats {
		rows = withoutHeartbeats(rows)
	}
	// A batch of heartbeats only reaches no sink, but its token still
	// becomes the stream's position.
	if len(rows) > 0 {
		if err := w.sink.Deliver(ctx, Batch{Stream: stream, Token: token, Rows: rows}); err != nil {
			if ctx.Err() != nil {
				// Shutting down (or the connection closing) mid-delivery:
				// not a sink failure; the batch is delivered after resuming.
				return err
			}
			w.metrics.sinkErrors.Inc()
			w.mu.Lock()
			w.sinkErr = err
			w.mu.Unlock()
			w.log.Error(err, "the sink did not take a batch; reconnecting to get it again", "stream", stream, "token", token, "sink", w.sink.String())
			return err
		}
		w.metrics.batches.WithLabelValues(stream).Inc()
	}
	w.mu.Lock()
	w.sinkErr = nil
	w.delivered[stream] = token
	if w.fileSink != nil {
		w.deliveredOffset = w.fileSink.Size()
	}
	w.dirty = true
	due := w.cfg.SaveInterval < 0 || time.Since(w.lastSave) >= w.cfg.SaveInterval
	w.mu.Unlock()
	if due {
		// A failed save does not stop delivery: the sink has the batch,
		// the next save retries, and Status, /healthz and the logs say
		// positions are not being saved (a crash then re-delivers more,
		// except to the file sink, which reads its tail back).
		_ = w.saveDelivered()
	}
	return nil
}

// withoutHeartbeats returns rows without the probe's heartbeat rows,
// copying only when there is one to drop.
func withoutHeartbeats(rows []json.RawMessage) []json.RawMessage {
	i := slices.IndexFunc(rows, replication.IsHeartbeatRow)
	if i < 0 {
		return rows
	}
	kept := slices.Clone(rows[:i])
	for _, r := range rows[i+1:] {
		if !replication.IsHeartbeatRow(r) {
			kept = append(kept, r)
		}
	}
	return kept
}

// saveDelivered makes the delivered positions (with the file sink's offset)
// durable. A failure is kept for Status and retried by the next save.
func (w *Worker) saveDelivered() error {
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	w.mu.Lock()
	if !w.dirty {
		w.mu.Unlock()
		return nil
	}
	positions := maps.Clone(w.delivered)
	var offset *int64
	if w.fileSink != nil {
		o := w.deliveredOffset
		offset = &o
	}
	w.dirty = false
	w.mu.Unlock()

	err := w.state.Commit(positions, offset)
	w.mu.Lock()
	w.saveErr = err
	w.lastSave = time.Now()
	if err != nil {
		w.dirty = true
	}
	w.mu.Unlock()
	if err != nil {
		w.metrics.stateErrors.Inc()
		w.log.Error(err, "saving positions failed; retrying with the next save", "positions", positions)
		return err
	}
	for stream, tok := range w.state.Positions() {
		w.metrics.position.WithLabelValues(stream).Set(float64(tok))
	}
	return nil
}

// HandlePosition saves the POSITION token at once: every row up to it has
// been handled (rows come before the POSITION that covers them), so a
// restart resumes from it instead of from NOW, and loses nothing published
// while the worker was down.
func (h *handler) HandlePosition(stream string, token int64) {
	w := (*Worker)(h)
	w.mu.Lock()
	if old, ok := w.delivered[stream]; !ok || token > old {
		w.delivered[stream] = token
		w.dirty = true
	}
	w.mu.Unlock()
	_ = w.saveDelivered() // logged and reported by Status; the next save retries
}

func (h *handler) HandleConnectionState(state replication.ClientState, err error) {
	w := (*Worker)(h)
	w.mu.Lock()
	defer w.mu.Unlock()
	prevErr := w.connErr
	w.connState = state
	switch state {
	case replication.ClientCaughtUp:
		w.connErr = nil
		w.metrics.caughtUp.Set(1)
		w.log.Info("caught up with the master", "positions", w.state.Positions())
	case replication.ClientDisconnected:
		w.metrics.caughtUp.Set(0)
		if err == nil || errors.Is(err, context.Canceled) {
			return
		}
		w.connErr = classify(w.cfg, err)
		if errors.Is(err, ErrLogChanged) {
			w.log.Error(w.connErr, "stopping: the master's log is not the one the saved positions belong to")
			return
		}
		if prevErr == nil || prevErr.Error() != w.connErr.Error() {
			w.log.Error(w.connErr, "replication connection lost; reconnecting")
		}
	}
}

func classify(cfg Config, err error) error {
	var remote *replication.RemoteError
	switch {
	case errors.Is(err, replication.ErrWrongRemote):
		return fmt.Errorf("%w: %s is not the master called %q: %w; check --server-name", ErrWrongServerName, cfg.Address, cfg.ServerName, err)
	case errors.Is(err, ErrSinkUnavailable), errors.Is(err, ErrSinkRejected), errors.Is(err, ErrSinkFile), errors.Is(err, ErrStateCorrupt), errors.Is(err, ErrLogChanged):
		return err // our own side failed; Status has it as SinkError/StateError
	case errors.As(err, &remote) && (strings.Contains(remote.Message, "shutting down") || remote.Message == replication.StandbyMessage):
		// A master stopping, or a standby reached during a takeover (before
		// the Service follows the active master): not a refusal, the next
		// attempt reaches a master that serves.
		return fmt.Errorf("%w: %s: %w", ErrMasterUnreachable, cfg.Address, err)
	case errors.As(err, &remote):
		return fmt.Errorf("%w: %s: %w", ErrMasterRefused, cfg.Address, err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrMasterUnreachable, cfg.Address, err)
	}
}
