package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// MasterObserver gives the controllers what a master's probe last saw.
type MasterObserver interface {
	// Snapshot returns the latest snapshot of the master's probe; false when
	// no probe runs for it.
	Snapshot(key types.NamespacedName) (probe.Snapshot, bool)
}

// ProbeController starts and stops probes as masters come and go.
type ProbeController interface {
	// Ensure runs a probe for the master against target, replacing one that
	// runs against a different target.
	Ensure(key types.NamespacedName, target ProbeTarget) error
	// Stop stops the master's probe, if any.
	Stop(key types.NamespacedName)
}

// Prober is a running probe (internal/probe.Probe).
type Prober interface {
	Run(ctx context.Context) error
	Snapshot() probe.Snapshot
}

// ProberFactory makes a probe for a target.
type ProberFactory func(ProbeTarget) (Prober, error)

// ProbeManager keeps one probe per ReplicationMaster. It is a manager
// Runnable: probes run only while the manager runs (and, with leader
// election, only on the leader). It polls each probe's snapshot and sends an
// event to every subscriber when what the probe sees changed, so the
// controllers update status without polling the API server.
type ProbeManager struct {
	factory      ProberFactory
	log          logr.Logger
	pollInterval time.Duration
	// retryDelay is how long a probe whose Run failed waits before a new
	// probe is made for the same target.
	retryDelay time.Duration

	mu          sync.Mutex
	ctx         context.Context // set by Start; nil before
	probes      map[types.NamespacedName]*runningProbe
	subscribers []chan event.GenericEvent
}

type runningProbe struct {
	target ProbeTarget
	prober Prober
	cancel context.CancelFunc
	done   chan struct{}
	// digest of the last snapshot announced to subscribers.
	digest string
}

// NewProbeManager returns a manager that makes probes with factory and
// checks them for changes every pollInterval.
func NewProbeManager(factory ProberFactory, pollInterval time.Duration, log logr.Logger) *ProbeManager {
	if pollInterval <= 0 {
		pollInterval = time.Second
	}
	return &ProbeManager{
		factory:      factory,
		log:          log,
		pollInterval: pollInterval,
		retryDelay:   defaultProbeRetryDelay,
		probes:       map[types.NamespacedName]*runningProbe{},
	}
}

// Subscribe returns a channel of events, one per master whose snapshot
// changed. Call it before the manager starts.
func (pm *ProbeManager) Subscribe() <-chan event.GenericEvent {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	ch := make(chan event.GenericEvent, 1024)
	pm.subscribers = append(pm.subscribers, ch)
	return ch
}

// NeedLeaderElection: only the leader probes, so a standby replica does
// not add connections to every master.
func (pm *ProbeManager) NeedLeaderElection() bool { return true }

// Ensure implements ProbeController.
func (pm *ProbeManager) Ensure(key types.NamespacedName, target ProbeTarget) error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	// A loop, because another Ensure may install a probe for the key while
	// this one waits without the lock.
	for {
		rp, ok := pm.probes[key]
		if !ok {
			break
		}
		if rp.target == target {
			return nil
		}
		// Waiting means a replaced probe never overlaps its successor; it
		// happens without the lock, which the probe's goroutine may need
		// to finish.
		done := pm.detachLocked(key, rp)
		pm.mu.Unlock()
		<-done
		pm.mu.Lock()
	}
	p, err := pm.factory(target)
	if err != nil {
		return fmt.Errorf("start probe for master %s at %s: %w", key, target.Address, err)
	}
	rp := &runningProbe{target: target, prober: p, done: make(chan struct{})}
	pm.probes[key] = rp
	if pm.ctx != nil {
		pm.runLocked(key, rp)
	}
	pm.log.Info("probe started", "master", key.String(), "address", target.Address, "httpURL", target.HTTPURL)
	return nil
}

// Stop implements ProbeController. It returns once the probe has ended.
func (pm *ProbeManager) Stop(key types.NamespacedName) {
	pm.mu.Lock()
	rp, ok := pm.probes[key]
	var done <-chan struct{}
	if ok {
		done = pm.detachLocked(key, rp)
	}
	pm.mu.Unlock()
	if ok {
		<-done
		pm.log.Info("probe stopped", "master", key.String())
	}
}

// detachLocked removes the master's probe from the table and cancels it.
// The caller waits on the returned channel only after releasing pm.mu: the
// probe's goroutine takes pm.mu to install a recreated prober, so waiting
// with the lock held would deadlock both.
func (pm *ProbeManager) detachLocked(key types.NamespacedName, rp *runningProbe) <-chan struct{} {
	delete(pm.probes, key)
	if rp.cancel == nil {
		// Ensured before Start: no goroutine to wait for.
		return closedChannel
	}
	rp.cancel()
	return rp.done
}

var closedChannel = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// defaultProbeRetryDelay is how long a probe whose Run failed waits before
// a new probe is made for the same target.
const defaultProbeRetryDelay = 5 * time.Second

func (pm *ProbeManager) runLocked(key types.NamespacedName, rp *runningProbe) {
	ctx, cancel := context.WithCancel(pm.ctx)
	rp.cancel = cancel
	go func() {
		defer close(rp.done)
		p := rp.prober
		for {
			// Run returns early only when the probe cannot run at all (its
			// metrics, labelled by the master's namespace and name, collide
			// with a probe of the same master that has not unregistered
			// yet). Make a fresh probe after a pause rather than leave the
			// master unobserved.
			err := p.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			pm.log.Error(err, "probe stopped unexpectedly; retrying", "master", key.String(), "in", pm.retryDelay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(pm.retryDelay):
			}
			np, err := pm.factory(rp.target)
			if err != nil {
				pm.log.Error(err, "cannot recreate probe; the master stays unobserved until its spec or pod changes", "master", key.String())
				return
			}
			pm.mu.Lock()
			// Cancelled while the factory ran: the probe was detached
			// (under this lock), so the new prober has no place to go.
			if ctx.Err() != nil {
				pm.mu.Unlock()
				return
			}
			rp.prober = np
			pm.mu.Unlock()
			p = np
		}
	}()
}

// Snapshot implements MasterObserver.
func (pm *ProbeManager) Snapshot(key types.NamespacedName) (probe.Snapshot, bool) {
	pm.mu.Lock()
	rp, ok := pm.probes[key]
	var p Prober
	if ok {
		p = rp.prober
	}
	pm.mu.Unlock()
	if !ok {
		return probe.Snapshot{}, false
	}
	return p.Snapshot(), true
}

// Running returns how many probes run, for tests and metrics.
func (pm *ProbeManager) Running() int {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return len(pm.probes)
}

// Start runs the probes until ctx ends.
func (pm *ProbeManager) Start(ctx context.Context) error {
	pm.mu.Lock()
	pm.ctx = ctx
	for key, rp := range pm.probes {
		pm.runLocked(key, rp)
	}
	pm.mu.Unlock()

	t := time.NewTicker(pm.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			pm.mu.Lock()
			var running []<-chan struct{}
			for key, rp := range pm.probes {
				running = append(running, pm.detachLocked(key, rp))
			}
			pm.mu.Unlock()
			for _, done := range running {
				<-done
			}
			return nil
		case <-t.C:
			pm.announceChanges(ctx)
		}
	}
}

// announceChanges sends an event for every master whose snapshot changed
// since the last announcement.
func (pm *ProbeManager) announceChanges(ctx context.Context) {
	type change struct{ key types.NamespacedName }
	var changed []change
	pm.mu.Lock()
	for key, rp := range pm.probes {
		d := snapshotDigest(rp.prober.Snapshot())
		if d != rp.digest {
			rp.digest = d
			changed = append(changed, change{key})
		}
	}
	subs := pm.subscribers
	pm.mu.Unlock()
	for _, c := range changed {
		for _, ch := range subs {
			ev := event.GenericEvent{Object: &replv1.ReplicationMaster{}}
			ev.Object.SetName(c.key.Name)
			ev.Object.SetNamespace(c.key.Namespace)
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// snapshotDigest identifies what a snapshot says, leaving out when it was
// taken, so an unchanged master produces no events.
func snapshotDigest(s probe.Snapshot) string {
	s.MeasuredAt = time.Time{}
	s.Error = nil
	b, err := json.Marshal(s)
	if err != nil {
		// A snapshot is plain data; if it ever fails to encode, treat it as
		// changed so status still follows.
		return fmt.Sprintf("unencodable:%v", time.Now().UnixNano())
	}
	return string(b)
}
