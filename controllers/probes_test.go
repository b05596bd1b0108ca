package controllers

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tcprepl/tcprepl/internal/probe"
)

// fakeProber runs until its context ends and serves a settable snapshot.
type fakeProber struct {
	target  ProbeTarget
	running atomic.Int32
	runErr  error
	mu      sync.Mutex
	snap    probe.Snapshot
}

func (f *fakeProber) Run(ctx context.Context) error {
	if f.runErr != nil {
		return f.runErr
	}
	f.running.Add(1)
	defer f.running.Add(-1)
	<-ctx.Done()
	return nil
}

func (f *fakeProber) Snapshot() probe.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeProber) set(s probe.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = s
}

type proberFactory struct {
	mu      sync.Mutex
	made    []*fakeProber
	fail    error
	runFail error
}

func (pf *proberFactory) new(t ProbeTarget) (Prober, error) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.fail != nil {
		return nil, pf.fail
	}
	p := &fakeProber{target: t, runErr: pf.runFail}
	pf.made = append(pf.made, p)
	return p, nil
}

func (pf *proberFactory) get(i int) *fakeProber {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	return pf.made[i]
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProbeManagerLifecycle(t *testing.T) {
	t.Parallel()
	pf := &proberFactory{}
	pm := NewProbeManager(pf.new, 10*time.Millisecond, logr.Discard())
	events := pm.Subscribe()
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	target := ProbeTarget{Address: "10.0.0.1:9092", ServerName: "s", HTTPURL: "http://10.0.0.1:9093"}

	// Ensured before Start: the probe starts with the manager.
	if err := pm.Ensure(key, target); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pm.Start(ctx) }()
	first := pf.get(0)
	waitUntil(t, "first probe running", func() bool { return first.running.Load() == 1 })

	// Same target: nothing restarts.
	if err := pm.Ensure(key, target); err != nil {
		t.Fatal(err)
	}
	if len(pf.made) != 1 {
		t.Fatalf("probes made = %d, want 1", len(pf.made))
	}

	// A changed snapshot is announced once.
	first.set(probe.Snapshot{MeasuredAt: time.Now(), Reachable: true})
	select {
	case ev := <-events:
		if ev.Object.GetName() != "m" || ev.Object.GetNamespace() != "ns" {
			t.Errorf("event for %s/%s", ev.Object.GetNamespace(), ev.Object.GetName())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for a changed snapshot")
	}
	// Only the measurement time moves: no event.
	first.set(probe.Snapshot{MeasuredAt: time.Now().Add(time.Second), Reachable: true})
	select {
	case <-events:
		t.Error("event for a snapshot that only changed its time")
	case <-time.After(100 * time.Millisecond):
	}
	if s, ok := pm.Snapshot(key); !ok || !s.Reachable {
		t.Errorf("snapshot = %+v, %v", s, ok)
	}

	// A new target replaces the probe; the old one has stopped first.
	target.Address = "10.0.0.2:9092"
	if err := pm.Ensure(key, target); err != nil {
		t.Fatal(err)
	}
	if first.running.Load() != 0 {
		t.Error("the replaced probe still runs")
	}
	second := pf.get(1)
	waitUntil(t, "second probe running", func() bool { return second.running.Load() == 1 })
	if second.target.Address != "10.0.0.2:9092" {
		t.Errorf("second target = %+v", second.target)
	}

	pm.Stop(key)
	if second.running.Load() != 0 || pm.Running() != 0 {
		t.Error("Stop left the probe running")
	}
	if _, ok := pm.Snapshot(key); ok {
		t.Error("a stopped master still has a snapshot")
	}
	pm.Stop(key) // stopping twice is harmless

	if err := pm.Ensure(key, target); err != nil {
		t.Fatal(err)
	}
	third := pf.get(2)
	waitUntil(t, "third probe running", func() bool { return third.running.Load() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start: %v", err)
	}
	if third.running.Load() != 0 {
		t.Error("probes outlive the manager")
	}
}

func TestProbeManagerFactoryError(t *testing.T) {
	t.Parallel()
	pf := &proberFactory{fail: errors.New("bad address")}
	pm := NewProbeManager(pf.new, time.Second, logr.Discard())
	err := pm.Ensure(types.NamespacedName{Namespace: "ns", Name: "m"}, ProbeTarget{Address: "nope"})
	if err == nil || !errors.Is(err, pf.fail) {
		t.Fatalf("err = %v", err)
	}
	if pm.Running() != 0 {
		t.Error("a failed probe was kept")
	}
}

func TestProbeManagerProbeThatCannotRun(t *testing.T) {
	t.Parallel()
	pf := &proberFactory{runFail: errors.New("metrics already registered")}
	pm := NewProbeManager(pf.new, time.Second, logr.Discard())
	pm.retryDelay = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pm.Start(ctx) }()
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	if err := pm.Ensure(key, ProbeTarget{Address: "a:1"}); err != nil {
		t.Fatal(err)
	}
	// Its Run fails at once: the manager makes fresh probes, paced.
	waitUntil(t, "retries", func() bool {
		pf.mu.Lock()
		defer pf.mu.Unlock()
		return len(pf.made) >= 3
	})
	// Once the failure clears, the next probe runs.
	pf.mu.Lock()
	pf.runFail = nil
	pf.mu.Unlock()
	waitUntil(t, "a probe runs after the failure clears", func() bool {
		pf.mu.Lock()
		defer pf.mu.Unlock()
		return pf.made[len(pf.made)-1].running.Load() == 1
	})
	// Stop must not hang.
	stopped := make(chan struct{})
	go func() { pm.Stop(key); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop hung on a probe whose Run had returned")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// failOnceFactory makes a first probe whose Run fails at once and remembers
// the context it ran with; the retry's factory call then blocks until that
// context is cancelled. That forces the interleaving in which a Stop, an
// Ensure for a new target or the manager's shutdown cancels the probe while
// its goroutine is between the factory call and installing the new prober.
type failOnceFactory struct {
	runCtx      chan context.Context // the first probe's Run context
	retryCalled chan struct{}        // closed when the retry reaches the factory
	calls       atomic.Int32
	unblock     chan struct{} // closed by the test's cleanup so nothing leaks
}

func newFailOnceFactory(t *testing.T) *failOnceFactory {
	f := &failOnceFactory{
		runCtx:      make(chan context.Context, 1),
		retryCalled: make(chan struct{}),
		unblock:     make(chan struct{}),
	}
	t.Cleanup(func() { close(f.unblock) })
	return f
}

func (f *failOnceFactory) new(target ProbeTarget) (Prober, error) {
	switch f.calls.Add(1) {
	case 1:
		return proberFunc(func(ctx context.Context) error {
			f.runCtx <- ctx
			return errors.New("metrics already registered")
		}), nil
	case 2:
		close(f.retryCalled)
		ctx := <-f.runCtx
		select {
		case <-ctx.Done():
		case <-f.unblock:
		}
		return proberFunc(func(ctx context.Context) error { <-ctx.Done(); return nil }), nil
	default:
		// Ensure's replacement for a new target.
		return proberFunc(func(ctx context.Context) error { <-ctx.Done(); return nil }), nil
	}
}

type proberFunc func(ctx context.Context) error

func (p proberFunc) Run(ctx context.Context) error { return p(ctx) }
func (p proberFunc) Snapshot() probe.Snapshot      { return probe.Snapshot{} }

// A Stop, an Ensure or a shutdown that cancels a probe while its goroutine
// is recreating the prober must return: the goroutine needs the manager's
// lock to finish, so nobody may wait for it while holding that lock.
func TestProbeManagerStopsAProbeBeingRecreated(t *testing.T) {
	t.Parallel()
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	tests := map[string]struct {
		interrupt func(pm *ProbeManager, stopManager context.CancelFunc) error
	}{
		"stop": {interrupt: func(pm *ProbeManager, _ context.CancelFunc) error {
			pm.Stop(key)
			return nil
		}},
		"ensure for a new target": {interrupt: func(pm *ProbeManager, _ context.CancelFunc) error {
			return pm.Ensure(key, ProbeTarget{Address: "b:1"})
		}},
		"manager shutdown": {interrupt: func(_ *ProbeManager, stopManager context.CancelFunc) error {
			stopManager()
			return nil
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFailOnceFactory(t)
			pm := NewProbeManager(f.new, time.Hour, logr.Discard())
			pm.retryDelay = time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			started := make(chan error, 1)
			go func() { started <- pm.Start(ctx) }()
			if err := pm.Ensure(key, ProbeTarget{Address: "a:1"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-f.retryCalled:
			case <-time.After(5 * time.Second):
				t.Fatal("the failed probe was never recreated")
			}

			interrupted := make(chan error, 1)
			go func() { interrupted <- tc.interrupt(pm, cancel) }()
			select {
			case err := <-interrupted:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("deadlock: the interrupt waits for a probe goroutine that waits for the manager's lock")
			}
			// The manager stays usable: Running takes the same lock.
			running := make(chan int, 1)
			go func() { running <- pm.Running() }()
			select {
			case <-running:
			case <-time.After(5 * time.Second):
				t.Fatal("the manager's lock is still held after the interrupt returned")
			}
			cancel()
			select {
			case err := <-started:
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the manager did not shut down")
			}
		})
	}
}
