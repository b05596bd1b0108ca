package master

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// A running master takes a new config (its file changed) through
// ApplyLive: the live settings (masterapi.ClassOf) are applied at once, and
// a change to a restart setting is only reported, as pending until the next
// start; the master keeps running on what it started with, so a reload
// never drops a connection.

// Results of a reload (tcprepl_master_config_reloads_total{result}).
const (
	ReloadApplied   = "applied"   // live settings changed and were applied
	ReloadUnchanged = "unchanged" // no live setting changed
	ReloadInvalid   = "invalid"   // the new config was refused; nothing changed
)

// reloadState serialises reloads and holds their metrics.
type reloadState struct {
	mu      sync.Mutex
	total   *prometheus.CounterVec
	pending prometheus.Gauge
}

func newReloadState(reg prometheus.Registerer) (*reloadState, error) {
	r := &reloadState{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcprepl_master_config_reloads_total",
			Help: "Config reloads by result: applied (live settings changed), unchanged, invalid (refused; the running config stays).",
		}, []string{"result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tcprepl_master_config_restart_pending",
			Help: "1 when the config file changes settings that take effect only on restart (see the log for which), else 0.",
		}),
	}
	for _, res := range []string{ReloadApplied, ReloadUnchanged, ReloadInvalid} {
		r.total.WithLabelValues(res)
	}
	for _, c := range []prometheus.Collector{r.total, r.pending} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register config reload metrics: %w", err)
		}
	}
	return r, nil
}

// ReloadResult is what ApplyLive did.
type ReloadResult struct {
	// Result is one of the Reload* constants.
	Result string
	// Applied lists the live settings changed; PendingRestart the restart
	// settings that differ from what the master started with.
	Applied        []string
	PendingRestart []string
}

// RecordInvalidReload counts a reload refused before ApplyLive (the file
// could not be read or parsed), logging why; the running config stays.
func (m *Master) RecordInvalidReload(err error) {
	m.reload.total.WithLabelValues(ReloadInvalid).Inc()
	m.logger.Error(err, "config reload refused; the master keeps its running config")
}

// ApplyLive applies the live settings of cfg to the running master and
// reports the restart settings that differ from its start as pending. An
// invalid cfg changes nothing.
func (m *Master) ApplyLive(cfg masterapi.Config) (ReloadResult, error) {
	m.reload.mu.Lock()
	defer m.reload.mu.Unlock()
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		err = fmt.Errorf("invalid config, not applied: %w", err)
		m.RecordInvalidReload(err)
		return ReloadResult{Result: ReloadInvalid}, err
	}
	running := *m.current.Load()
	next := masterapi.WithLive(running, cfg)
	live := masterapi.Diff(running, next).Live
	pending := masterapi.Diff(m.cfg, cfg).Restart
	res := ReloadResult{Result: ReloadUnchanged, PendingRestart: pending}
	if len(live) > 0 {
		if err := m.applyLive(next, live); err != nil {
			err = fmt.Errorf("apply live settings %s: %w", strings.Join(live, ", "), err)
			m.RecordInvalidReload(err)
			return ReloadResult{Result: ReloadInvalid}, err
		}
		m.current.Store(&next)
		res.Result, res.Applied = ReloadApplied, live
		m.logger.Info("config reloaded: live settings applied", "changed", live)
	}
	m.reload.total.WithLabelValues(res.Result).Inc()
	if len(pending) > 0 {
		m.reload.pending.Set(1)
		m.logger.Info("config changes settings that take effect only on restart; the master keeps running with its start-up values until restarted",
			"restartPending", pending)
	} else {
		m.reload.pending.Set(0)
	}
	return res, nil
}

// liveServer is the part of the protocol server a reload changes
// (replication.Server; fakes in tests may not have it).
type liveServer interface {
	SetLive(replication.LiveSettings) error
}

// applyLive pushes the live settings of next into the running parts. What
// can refuse is asked first, so that a refusal changes nothing.
func (m *Master) applyLive(next masterapi.Config, changed []string) error {
	l := next.Limits
	setRet := slices.Contains(changed, "retention")
	if setRet && !canSetRetention(m.store) {
		return errors.New("the stream log cannot change its retention while running; restart the master to apply it")
	}
	if s, ok := m.srv.(liveServer); ok {
		err := s.SetLive(replication.LiveSettings{
			MaxPendingCommands: l.MaxPendingCommands,
			MaxPendingBytes:    l.MaxPendingBytes,
			WriteTimeout:       l.WriteTimeout.Duration,
			PingInterval:       l.PingInterval.Duration,
			PingTimeout:        l.PingTimeout.Duration,
			MaxConnections:     l.MaxConnections,
			IdentifyTimeout:    l.IdentifyTimeout.Duration,
			MaxNameLength:      l.MaxNameLength,
			Authorizer:         newAccessPolicy(next),
		})
		if err != nil {
			return fmt.Errorf("protocol server: %w", err)
		}
	}
	if setRet {
		setRetention(m.store, next)
	}
	m.effects.ips.setMax(l.MaxUserIPs)
	return nil
}

// setRetention gives the log the retention of cfg; it applies on the log's
// next retention pass.
func setRetention(store StreamLog, cfg masterapi.Config) {
	def := cfg.Retention["*"]
	switch l := store.(type) {
	case *streamlog.Log:
		per := map[string]streamlog.Retention{}
		for _, s := range cfg.Streams() {
			if r, ok := cfg.Retention[s]; ok {
				per[s] = streamlog.Retention{MaxRows: r.MaxRows, MaxAge: r.MaxAge.Duration, MaxBytes: r.MaxBytes}
			}
		}
		l.SetRetention(per, streamlog.Retention{MaxRows: def.MaxRows, MaxAge: def.MaxAge.Duration, MaxBytes: def.MaxBytes})
	case *pglog.Log:
		per := map[string]pglog.Retention{}
		for _, s := range cfg.Streams() {
			if r, ok := cfg.Retention[s]; ok {
				per[s] = pglog.Retention{MaxRows: r.MaxRows, MaxAge: r.MaxAge.Duration, MaxBytes: r.MaxBytes}
			}
		}
		l.SetRetention(per, pglog.Retention{MaxRows: def.MaxRows, MaxAge: def.MaxAge.Duration, MaxBytes: def.MaxBytes})
	case retentionSetter:
		l.SetRetention(cfg)
	}
}

// canSetRetention reports whether setRetention can change store's.
func canSetRetention(store StreamLog) bool {
	switch store.(type) {
	case *streamlog.Log, *pglog.Log, retentionSetter:
		return true
	}
	return false
}

// retentionSetter is a log that takes retention in config form (test
// fakes, wrappers).
type retentionSetter interface {
	SetRetention(cfg masterapi.Config)
}

// setMax changes the table's bound, dropping the least recently seen
// entries beyond a lower one.
func (t *userIPTable) setMax(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.max = n
	for t.order.Len() > t.max {
		last := t.order.Back()
		t.order.Remove(last)
		delete(t.byKey, userIPKey(*last.Value.(*UserIP)))
	}
}
