package synapse

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/redis/go-redis/v9"
)

// Defaults of Config's optional fields.
const (
	// DefaultSolicitInterval is how often a watcher re-publishes
	// `REPLICATE ` when asked to (the CLI's and the operator's default).
	DefaultSolicitInterval = 60 * time.Second
	defaultSettleTime      = 3 * time.Second
	defaultMinSolicitGap   = 5 * time.Second
	defaultStatsInterval   = 10 * time.Second
	defaultRateInterval    = 5 * time.Second
	defaultMinBackoff      = 200 * time.Millisecond
	defaultMaxBackoff      = 30 * time.Second
	defaultDialTimeout     = 5 * time.Second
	// keepAlive is how long the subscription may stay silent before the
	// watcher PINGs Redis to learn whether it is still there.
	keepAlive = 5 * time.Second
	// replicateMessage is REPLICATE as Synapse publishes it.
	replicateMessage = NameReplicate + " "
	// userIPSuffix names the channel USER_IP is published on.
	userIPSuffix = "/USER_IP"
)

// Config says which deployment a Watcher watches and how.
type Config struct {
	// Addr is Redis's HOST:PORT.
	Addr string
	// Username and Password authenticate to Redis (AUTH); both optional.
	Username, Password string
	// DB is selected after connecting. Pub/sub ignores it, but Synapse
	// selects it too and an ACL may restrict it.
	DB int
	// TLS, when set, connects with TLS (for example with RootCAs set to
	// the Redis server's CA).
	TLS *tls.Config
	// ServerName is the homeserver's server_name: the channel.
	ServerName string
	// SolicitInterval is how often `REPLICATE ` is published after the one
	// on every (re)connect; 0 means never after that first one. Use
	// DefaultSolicitInterval unless there is a reason not to.
	SolicitInterval time.Duration
	// StreamWriters maps a stream to the instances configured to write it
	// (see ParseStreamWriters); nil means unknown, and then no writer is
	// reported missing or unexpected.
	StreamWriters map[string][]string
	// Logger receives connection changes (info) and skipped messages
	// (info, at most one line a second).
	Logger logr.Logger

	// SettleTime is how long after a REPLICATE the answers are awaited
	// before configured writers that did not answer are reported missing
	// (default 3s).
	SettleTime time.Duration
	// MinSolicitGap rate-limits Solicit: a REPLICATE asked for sooner than
	// this after the last one is published when the gap has passed
	// (default 5s).
	MinSolicitGap time.Duration
	// StatsInterval is how often Redis's pub/sub statistics are read
	// (default 10s).
	StatsInterval time.Duration
	// RateInterval is the window of the per-second rates (default 5s).
	RateInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnects
	// (defaults 200ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds connecting to Redis (default 5s).
	DialTimeout time.Duration
	// Limits bound the memory a hostile channel can make the watcher use.
	Limits Limits
}

// Watcher subscribes to one Synapse deployment's replication channel and
// keeps what it hears; see Snapshot.
type Watcher struct {
	cfg      Config
	log      logr.Logger
	solicitC chan struct{}
	running  atomic.Bool

	mu            sync.Mutex
	tracker       *tracker
	subscribed    bool
	err           error
	lastSolicitAt time.Time
	// solicitErr is why the last REPLICATE could not be published: the
	// watcher hears traffic but cannot ask for positions.
	solicitErr error
	redisStats RedisStats
	skipLog    logLimiter
}

// NewWatcher checks cfg and fills its defaults; it does not connect.
func NewWatcher(cfg Config) (*Watcher, error) {
	if cfg.Addr == "" {
		return nil, errors.New("synapse watcher: no Redis address; give HOST:PORT of the Redis Synapse uses")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("synapse watcher: Redis address %q is not HOST:PORT: %w", cfg.Addr, err)
	}
	if cfg.ServerName == "" || strings.ContainsAny(cfg.ServerName, " \t\r\n") {
		return nil, fmt.Errorf("synapse watcher: server name %q must be the homeserver's server_name, without spaces", cfg.ServerName)
	}
	if cfg.DB < 0 {
		return nil, fmt.Errorf("synapse watcher: Redis db %d is negative", cfg.DB)
	}
	for name, d := range map[string]time.Duration{
		"SolicitInterval": cfg.SolicitInterval, "SettleTime": cfg.SettleTime,
		"MinSolicitGap": cfg.MinSolicitGap, "StatsInterval": cfg.StatsInterval,
		"RateInterval": cfg.RateInterval, "MinBackoff": cfg.MinBackoff,
		"MaxBackoff": cfg.MaxBackoff, "DialTimeout": cfg.DialTimeout,
	} {
		if d < 0 {
			return nil, fmt.Errorf("synapse watcher: %s %v is negative", name, d)
		}
	}
	setDefault(&cfg.SettleTime, defaultSettleTime)
	setDefault(&cfg.MinSolicitGap, defaultMinSolicitGap)
	setDefault(&cfg.StatsInterval, defaultStatsInterval)
	setDefault(&cfg.RateInterval, defaultRateInterval)
	setDefault(&cfg.MinBackoff, defaultMinBackoff)
	setDefault(&cfg.MaxBackoff, defaultMaxBackoff)
	setDefault(&cfg.DialTimeout, defaultDialTimeout)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	return &Watcher{
		cfg:      cfg,
		log:      cfg.Logger.WithValues("redis", cfg.Addr, "serverName", cfg.ServerName),
		solicitC: make(chan struct{}, 1),
		tracker:  newTracker(cfg.ServerName, cfg.StreamWriters, cfg.SettleTime, cfg.Limits),
		err:      fmt.Errorf("%w: not connected yet", ErrRedisUnreachable),
	}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Snapshot returns a copy of what the watcher knows now.
func (w *Watcher) Snapshot() Snapshot {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Snapshot{
		MeasuredAt:    now,
		Subscribed:    w.subscribed,
		LastSolicitAt: w.lastSolicitAt,
		Redis:         w.redisStats,
	}
	s.Redis.Clients = append([]PubSubClient(nil), w.redisStats.Clients...)
	w.tracker.snapshot(now, &s)
	s.Error = w.err
	if s.Error == nil && s.Subscribed && w.solicitErr != nil {
		s.Error = w.solicitErr
	}
	if s.Error == nil && s.Subscribed && s.LastMessageAt.IsZero() && !w.tracker.settledReplicate.IsZero() {
		s.Error = fmt.Errorf("%w: channel %q stayed silent after REPLICATE; check the server name and that Synapse runs with Redis at %s", ErrNothingHeard, w.cfg.ServerName, w.cfg.Addr)
	}
	if s.Error != nil {
		s.ErrorMessage = s.Error.Error()
	}
	return s
}

// Solicit asks for a `REPLICATE ` now; it is published at once, or when
// MinSolicitGap has passed since the last one. It never blocks.
func (w *Watcher) Solicit() {
	select {
	case w.solicitC <- struct{}{}:
	default:
	}
}

// Run watches until ctx ends, reconnecting with backoff whenever Redis is
// unreachable or refuses the watcher; the reason is in Snapshot().Error
// meanwhile. It returns nil when ctx ends. A Watcher runs once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("synapse watcher: Run called twice")
	}
	client := redis.NewClient(w.redisOptions())
	defer func() { _ = client.Close() }()

	backoff := w.cfg.MinBackoff
	for {
		subscribedFor, err := w.session(ctx, client)
		if ctx.Err() != nil {
			w.setState(false, fmt.Errorf("%w: watcher stopped", ErrRedisUnreachable))
			return nil
		}
		w.setState(false, err)
		if subscribedFor > w.cfg.MaxBackoff {
			backoff = w.cfg.MinBackoff
		}
		// Jitter spreads the reconnects of many watchers after a Redis
		// restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		w.log.Info("Redis subscription lost; reconnecting", "error", err.Error(), "in", wait.String())
		select {
		case <-ctx.Done():
			w.setState(false, fmt.Errorf("%w: watcher stopped", ErrRedisUnreachable))
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, w.cfg.MaxBackoff)
	}
}

func (w *Watcher) redisOptions() *redis.Options {
	return &redis.Options{
		Addr:        w.cfg.Addr,
		Username:    w.cfg.Username,
		Password:    w.cfg.Password,
		DB:          w.cfg.DB,
		TLSConfig:   w.cfg.TLS,
		DialTimeout: w.cfg.DialTimeout,
		ReadTimeout: w.cfg.DialTimeout,
		// RESP2 pub/sub, as Synapse speaks it, works with every Redis a
		// Synapse deployment may run.
		Protocol: 2,
		// No CLIENT SETINFO: an ACL that forbids CLIENT must not stop the
		// watcher from subscribing.
		DisableIdentity: true,
		// The watcher reconnects itself, with backoff; the client must not
		// retry behind its back.
		MaxRetries: -1,
		PoolSize:   2,
	}
}

func (w *Watcher) setState(subscribed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subscribed = subscribed
	w.err = err
	if subscribed {
		w.tracker.resubscribed()
	}
}

// session subscribes once and reads until the subscription fails or ctx
// ends. It returns how long it was subscribed and why it ended.
func (w *Watcher) session(ctx context.Context, client *redis.Client) (time.Duration, error) {
	mainChannel := w.cfg.ServerName
	channels := []string{mainChannel, mainChannel + userIPSuffix}
	ps := client.Subscribe(ctx)
	defer func() { _ = ps.Close() }()
	if err := ps.Subscribe(ctx, channels...); err != nil {
		return 0, classify("SUBSCRIBE "+mainChannel, w.cfg.Addr, err)
	}
	for confirmed := 0; confirmed < len(channels); {
		msg, err := ps.ReceiveTimeout(ctx, w.cfg.DialTimeout)
		if err != nil {
			return 0, classify("SUBSCRIBE "+mainChannel, w.cfg.Addr, err)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			confirmed++
		case *redis.Message:
			w.handle(m.Channel, m.Payload)
		}
	}
	start := time.Now()
	w.setState(true, nil)
	w.log.Info("subscribed", "channels", channels)

	sessionCtx, cancel := context.WithCancel(ctx)
	var helpers sync.WaitGroup
	helpers.Add(2)
	go func() {
		defer helpers.Done()
		// Closing the subscription is what unblocks the read below when
		// the watcher stops.
		<-sessionCtx.Done()
		_ = ps.Close()
	}()
	go func() {
		defer helpers.Done()
		w.housekeep(sessionCtx, client)
	}()
	defer func() {
		cancel()
		helpers.Wait()
	}()

	for {
		msg, err := ps.ReceiveTimeout(sessionCtx, keepAlive)
		if err != nil {
			if sessionCtx.Err() != nil {
				return time.Since(start), sessionCtx.Err()
			}
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				// Silence: ask Redis whether it is still there; the PONG
				// comes back through the subscription.
				if perr := ps.Ping(sessionCtx); perr != nil {
					return time.Since(start), classify("PING", w.cfg.Addr, perr)
				}
				continue
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return time.Since(start), fmt.Errorf("%w: Redis at %s closed the subscription (restarted, or the watcher fell behind and hit client-output-buffer-limit pubsub): %w", ErrRedisUnreachable, w.cfg.Addr, err)
			}
			return time.Since(start), classify("reading the subscription", w.cfg.Addr, err)
		}
		switch m := msg.(type) {
		case *redis.Message:
			w.handle(m.Channel, m.Payload)
		case *redis.Subscription:
			if m.Kind == "unsubscribe" {
				return time.Since(start), fmt.Errorf("%w: Redis unsubscribed the watcher from %s", ErrRedisUnreachable, m.Channel)
			}
		}
	}
}

// handle feeds one message to the tracker and logs why it was skipped, if
// it was.
func (w *Watcher) handle(channel, payload string) {
	now := time.Now()
	w.mu.Lock()
	err := w.tracker.observe(channel, payload, now)
	var suppressed uint64
	logIt := false
	if err != nil {
		logIt, suppressed = w.skipLog.allow(now)
	}
	w.mu.Unlock()
	if logIt {
		w.log.Info("skipped a message on the replication channel", "channel", channel, "reason", err.Error(),
			"message", truncate(payload, 120), "suppressedSinceLastLog", suppressed)
	}
}

// housekeep publishes REPLICATE on connect, then every SolicitInterval and
// when asked; reads Redis's statistics; and turns counters into rates.
func (w *Watcher) housekeep(ctx context.Context, client *redis.Client) {
	w.solicit(ctx, client)
	w.readStats(ctx, client)

	var solicitTick <-chan time.Time
	if w.cfg.SolicitInterval > 0 {
		t := time.NewTicker(w.cfg.SolicitInterval)
		defer t.Stop()
		solicitTick = t.C
	}
	statsTick := time.NewTicker(w.cfg.StatsInterval)
	defer statsTick.Stop()
	rateTick := time.NewTicker(w.cfg.RateInterval)
	defer rateTick.Stop()
	lastRate := time.Now()
	// deferred fires when a Solicit asked too soon may go out.
	deferred := time.NewTimer(time.Hour)
	deferred.Stop()
	defer deferred.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-solicitTick:
			w.solicit(ctx, client)
		case <-w.solicitC:
			w.mu.Lock()
			wait := w.cfg.MinSolicitGap - time.Since(w.lastSolicitAt)
			w.mu.Unlock()
			if wait > 0 {
				deferred.Reset(wait)
				continue
			}
			w.solicit(ctx, client)
		case <-deferred.C:
			w.solicit(ctx, client)
		case <-statsTick.C:
			w.readStats(ctx, client)
		case now := <-rateTick.C:
			w.mu.Lock()
			w.tracker.tick(now.Sub(lastRate))
			w.mu.Unlock()
			lastRate = now
		}
	}
}

// solicit publishes `REPLICATE `, which every Synapse process answers with
// POSITION for each stream it writes.
func (w *Watcher) solicit(ctx context.Context, client *redis.Client) {
	w.mu.Lock()
	// Counted before publishing: the echo can arrive before PUBLISH returns.
	w.tracker.solicited()
	w.mu.Unlock()
	err := client.Publish(ctx, w.cfg.ServerName, replicateMessage).Err()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.tracker.ownEchoes = max(0, w.tracker.ownEchoes-1)
		if ctx.Err() == nil {
			w.solicitErr = fmt.Errorf("cannot ask for positions: %w", classify("PUBLISH REPLICATE", w.cfg.Addr, err))
			w.log.Info("could not publish REPLICATE", "error", w.solicitErr.Error())
		}
		return
	}
	w.solicitErr = nil
	w.lastSolicitAt = time.Now()
}

// logLimiter lets one log line a second through and counts the rest, so a
// flood of bad messages cannot flood the logs.
type logLimiter struct {
	last       time.Time
	suppressed uint64
}

func (l *logLimiter) allow(now time.Time) (bool, uint64) {
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		return false, 0
	}
	s := l.suppressed
	l.last, l.suppressed = now, 0
	return true, s
}

// classify names a Redis failure: ErrRedisAuth when Redis refused the
// credentials, the db or an ACL permission; ErrRedisUnreachable otherwise.
func classify(op, addr string, err error) error {
	msg := err.Error()
	var redisErr redis.Error
	if errors.As(err, &redisErr) || strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") {
		switch {
		case strings.HasPrefix(msg, "WRONGPASS"), strings.HasPrefix(msg, "NOAUTH"),
			strings.HasPrefix(msg, "ERR AUTH"), strings.Contains(msg, "invalid password"),
			strings.Contains(msg, "invalid username-password"):
			return fmt.Errorf("%w: %s at %s: Redis refused the credentials; check the password (file or TCPREPL_REDIS_PASSWORD) and user: %w", ErrRedisAuth, op, addr, err)
		case strings.HasPrefix(msg, "NOPERM"):
			return fmt.Errorf("%w: %s at %s: the Redis user lacks a permission (ACL); grant it pub/sub on the channel: %w", ErrRedisAuth, op, addr, err)
		case strings.Contains(msg, "DB index"):
			return fmt.Errorf("%w: %s at %s: Redis refused SELECT; check the db number: %w", ErrRedisAuth, op, addr, err)
		}
		return fmt.Errorf("%w: %s at %s: Redis answered with an error: %w", ErrRedisUnreachable, op, addr, err)
	}
	return fmt.Errorf("%w: %s at %s: %w", ErrRedisUnreachable, op, addr, err)
}
