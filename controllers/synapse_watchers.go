package controllers

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

// SynapseWatcher is a running watcher of one Synapse deployment's Redis
// channel (internal/synapse.Watcher). Run reconnects by itself until ctx
// ends.
type SynapseWatcher interface {
	Run(ctx context.Context) error
	Snapshot() synapse.Snapshot
}

// SynapseWatchTarget is everything a watcher needs, resolved from a
// SynapseReplication and the Secret and ConfigMap it references.
type SynapseWatchTarget struct {
	Addr            string
	Username        string
	Password        string
	DB              int
	TLS             *tls.Config
	ServerName      string
	SolicitInterval time.Duration
	// StreamWriters is stream_writers from the homeserver config; nil when
	// no config is referenced.
	StreamWriters map[string][]string
	// Digest identifies all of the above (the password and CA included), so
	// that a watcher is restarted exactly when one of them changes.
	Digest string
}

// SynapseWatcherFactory makes a watcher for a target.
type SynapseWatcherFactory func(SynapseWatchTarget) (SynapseWatcher, error)

// SynapseWatchers keeps one watcher per SynapseReplication. Like the
// ProbeManager it is a manager Runnable (watchers run only on the leader)
// and announces resources whose snapshot changed; unlike it, it never waits
// for a watcher's goroutine while holding its lock (issue 13): a goroutine
// that needs the lock could never finish.
type SynapseWatchers struct {
	factory      SynapseWatcherFactory
	log          logr.Logger
	pollInterval time.Duration

	mu          sync.Mutex
	ctx         context.Context // set by Start; nil before
	watchers    map[types.NamespacedName]*runningWatcher
	subscribers []chan event.GenericEvent
	// running counts watcher goroutines, so that Start returns only after
	// every one has ended.
	running sync.WaitGroup
}

type runningWatcher struct {
	target  SynapseWatchTarget
	watcher SynapseWatcher // guarded by SynapseWatchers.mu
	cancel  context.CancelFunc
	// digest of the last snapshot announced to subscribers.
	announced string
}

// NewSynapseWatchers returns a manager that makes watchers with factory and
// checks them for changes every pollInterval.
func NewSynapseWatchers(factory SynapseWatcherFactory, pollInterval time.Duration, log logr.Logger) *SynapseWatchers {
	if pollInterval <= 0 {
		pollInterval = time.Second
	}
	return &SynapseWatchers{
		factory:      factory,
		log:          log,
		pollInterval: pollInterval,
		watchers:     map[types.NamespacedName]*runningWatcher{},
	}
}

// Subscribe returns a channel of events, one per resource whose snapshot
// changed. Call it before the manager starts.
func (sw *SynapseWatchers) Subscribe() <-chan event.GenericEvent {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	ch := make(chan event.GenericEvent, 1024)
	sw.subscribers = append(sw.subscribers, ch)
	return ch
}

// NeedLeaderElection: only the leader watches, so a standby replica adds no
// subscriber to the deployment's Redis.
func (sw *SynapseWatchers) NeedLeaderElection() bool { return true }

// Ensure runs a watcher for key against target, replacing one whose target
// differs (by digest). The replaced watcher is cancelled, not awaited: two
// subscriptions for a moment are harmless, a lock held while waiting is not.
func (sw *SynapseWatchers) Ensure(key types.NamespacedName, target SynapseWatchTarget) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if rw, ok := sw.watchers[key]; ok {
		if rw.target.Digest == target.Digest {
			return nil
		}
		sw.removeLocked(key, rw)
	}
	w, err := sw.factory(target)
	if err != nil {
		return fmt.Errorf("start the watcher of %s for channel %q at %s: %w", key, target.ServerName, target.Addr, err)
	}
	rw := &runningWatcher{target: target, watcher: w}
	sw.watchers[key] = rw
	if sw.ctx != nil {
		sw.runLocked(key, rw)
	}
	sw.log.Info("watcher started", "synapsereplication", key.String(), "redis", target.Addr, "serverName", target.ServerName)
	return nil
}

// Stop ends the watcher of key, if any.
func (sw *SynapseWatchers) Stop(key types.NamespacedName) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if rw, ok := sw.watchers[key]; ok {
		sw.removeLocked(key, rw)
		sw.log.Info("watcher stopped", "synapsereplication", key.String())
	}
}

// removeLocked forgets rw and cancels its goroutine without waiting for it.
func (sw *SynapseWatchers) removeLocked(key types.NamespacedName, rw *runningWatcher) {
	delete(sw.watchers, key)
	if rw.cancel != nil {
		rw.cancel()
	}
}

// watcherRetryDelay is how long the goroutine waits before making a new
// watcher when Run returned while it should still run.
var watcherRetryDelay = 5 * time.Second

func (sw *SynapseWatchers) runLocked(key types.NamespacedName, rw *runningWatcher) {
	ctx, cancel := context.WithCancel(sw.ctx)
	rw.cancel = cancel
	w := rw.watcher
	sw.running.Add(1)
	go func() {
		defer sw.running.Done()
		for {
			// Run reconnects by itself; it returns early only when it
			// cannot run at all. Make a fresh watcher after a pause rather
			// than leave the deployment unwatched.
			err := w.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			sw.log.Error(err, "watcher stopped unexpectedly; retrying", "synapsereplication", key.String(), "in", watcherRetryDelay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(watcherRetryDelay):
			}
			nw, err := sw.factory(rw.target)
			if err != nil {
				sw.log.Error(err, "cannot recreate the watcher; the deployment stays unwatched until its spec, Secret or ConfigMap changes", "synapsereplication", key.String())
				return
			}
			sw.mu.Lock()
			rw.watcher = nw
			sw.mu.Unlock()
			w = nw
		}
	}()
}

// Snapshot returns the latest snapshot of key's watcher; false when none
// runs.
func (sw *SynapseWatchers) Snapshot(key types.NamespacedName) (synapse.Snapshot, bool) {
	sw.mu.Lock()
	rw, ok := sw.watchers[key]
	var w SynapseWatcher
	if ok {
		w = rw.watcher
	}
	sw.mu.Unlock()
	if !ok {
		return synapse.Snapshot{}, false
	}
	return w.Snapshot(), true
}

// Target returns the target key's watcher runs against.
func (sw *SynapseWatchers) Target(key types.NamespacedName) (SynapseWatchTarget, bool) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	rw, ok := sw.watchers[key]
	if !ok {
		return SynapseWatchTarget{}, false
	}
	return rw.target, true
}

// snapshots returns every watcher's snapshot, sorted by key, taken outside
// the lock (a watcher's Snapshot takes its own locks).
func (sw *SynapseWatchers) snapshots() []keyedSnapshot {
	sw.mu.Lock()
	type kw struct {
		key types.NamespacedName
		w   SynapseWatcher
	}
	ws := make([]kw, 0, len(sw.watchers))
	for k, rw := range sw.watchers {
		ws = append(ws, kw{k, rw.watcher})
	}
	sw.mu.Unlock()
	sort.Slice(ws, func(i, j int) bool { return ws[i].key.String() < ws[j].key.String() })
	out := make([]keyedSnapshot, len(ws))
	for i, x := range ws {
		out[i] = keyedSnapshot{key: x.key, snap: x.w.Snapshot()}
	}
	return out
}

type keyedSnapshot struct {
	key  types.NamespacedName
	snap synapse.Snapshot
}

// Running returns how many watchers run.
func (sw *SynapseWatchers) Running() int {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return len(sw.watchers)
}

// Start runs the watchers until ctx ends, then cancels them all and waits
// for their goroutines, with the lock released.
func (sw *SynapseWatchers) Start(ctx context.Context) error {
	defer unregisterSynapseMetrics(sw)
	sw.mu.Lock()
	sw.ctx = ctx
	for key, rw := range sw.watchers {
		sw.runLocked(key, rw)
	}
	sw.mu.Unlock()

	t := time.NewTicker(sw.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sw.mu.Lock()
			for key, rw := range sw.watchers {
				sw.removeLocked(key, rw)
			}
			sw.mu.Unlock()
			sw.running.Wait()
			return nil
		case <-t.C:
			sw.announceChanges(ctx)
		}
	}
}

// announceChanges sends an event for every resource whose snapshot changed
// since the last announcement.
func (sw *SynapseWatchers) announceChanges(ctx context.Context) {
	var changed []types.NamespacedName
	for _, ks := range sw.snapshots() {
		d := synapseSnapshotDigest(ks.snap)
		sw.mu.Lock()
		if rw, ok := sw.watchers[ks.key]; ok && rw.announced != d {
			rw.announced = d
			changed = append(changed, ks.key)
		}
		sw.mu.Unlock()
	}
	sw.mu.Lock()
	subs := sw.subscribers
	sw.mu.Unlock()
	for _, key := range changed {
		for _, ch := range subs {
			ev := event.GenericEvent{Object: &replv1.SynapseReplication{}}
			ev.Object.SetName(key.Name)
			ev.Object.SetNamespace(key.Namespace)
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// synapseSnapshotDigest identifies what a snapshot says, leaving out the
// clocks that move with every message, so a quiet deployment produces no
// events.
func synapseSnapshotDigest(s synapse.Snapshot) string {
	s.MeasuredAt, s.LastMessageAt = time.Time{}, time.Time{}
	s.CommandsPerSecond, s.UserIPPerSecond, s.Commands = 0, 0, nil
	if s.Error != nil {
		s.ErrorMessage = s.Error.Error()
	}
	s.Error = nil
	streams := make([]synapse.Stream, len(s.Streams))
	for i, st := range s.Streams {
		st.Writers = append([]synapse.Writer(nil), st.Writers...)
		for j := range st.Writers {
			st.Writers[j].LastSeenAt = time.Time{}
			st.Writers[j].RowsPerSecond, st.Writers[j].CommandsPerSecond = 0, 0
		}
		streams[i] = st
	}
	s.Streams = streams
	b, err := json.Marshal(s)
	if err != nil {
		// A snapshot is plain data; if it ever fails to encode, treat it as
		// changed so status still follows.
		return fmt.Sprintf("unencodable:%v", time.Now().UnixNano())
	}
	return string(b)
}
