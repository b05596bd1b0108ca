package controllers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tcprepl/tcprepl/internal/synapse"
)

// fakeSynapseWatcher serves a snapshot the test sets; Run blocks until its
// context ends (or returns runErr at once).
type fakeSynapseWatcher struct {
	target SynapseWatchTarget
	runErr error

	mu      sync.Mutex
	snap    synapse.Snapshot
	running bool
	runs    int
}

func (f *fakeSynapseWatcher) Run(ctx context.Context) error {
	f.mu.Lock()
	f.running, f.runs = true, f.runs+1
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running = false
		f.mu.Unlock()
	}()
	if f.runErr != nil {
		return f.runErr
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeSynapseWatcher) Snapshot() synapse.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSynapseWatcher) set(s synapse.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = s
}

func (f *fakeSynapseWatcher) isRunning() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// fakeWatcherFactory records every watcher it makes.
type fakeWatcherFactory struct {
	mu      sync.Mutex
	made    []*fakeSynapseWatcher
	initial synapse.Snapshot
	err     error
}

func (f *fakeWatcherFactory) make(t SynapseWatchTarget) (SynapseWatcher, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	w := &fakeSynapseWatcher{target: t, snap: f.initial}
	w.snap.ServerName = t.ServerName
	f.made = append(f.made, w)
	return w, nil
}

func (f *fakeWatcherFactory) all() []*fakeSynapseWatcher {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeSynapseWatcher(nil), f.made...)
}

func (f *fakeWatcherFactory) last() *fakeSynapseWatcher {
	all := f.all()
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSynapseWatchersLifecycle(t *testing.T) {
	f := &fakeWatcherFactory{}
	sw := NewSynapseWatchers(f.make, 10*time.Millisecond, testr.New(t))
	events := sw.Subscribe()
	key := types.NamespacedName{Namespace: "ns", Name: "matrix"}

	// Ensured before the manager starts: made, not run.
	if err := sw.Ensure(key, SynapseWatchTarget{ServerName: "a", Digest: "1"}); err != nil {
		t.Fatal(err)
	}
	first := f.last()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Start(ctx) }()
	pollUntil(t, "the first watcher runs", first.isRunning)

	// Same digest: nothing restarts.
	if err := sw.Ensure(key, SynapseWatchTarget{ServerName: "a", Digest: "1"}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.all()); n != 1 {
		t.Fatalf("%d watchers made for an unchanged target, want 1", n)
	}

	// A snapshot change is announced.
	first.set(synapse.Snapshot{ServerName: "a", Subscribed: true})
	select {
	case ev := <-events:
		if ev.Object.GetName() != "matrix" || ev.Object.GetNamespace() != "ns" {
			t.Errorf("event for %s/%s", ev.Object.GetNamespace(), ev.Object.GetName())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event after the snapshot changed")
	}

	// A new digest (a new password, say) replaces the watcher.
	if err := sw.Ensure(key, SynapseWatchTarget{ServerName: "a", Password: "new", Digest: "2"}); err != nil {
		t.Fatal(err)
	}
	second := f.last()
	if second == first {
		t.Fatal("no new watcher for a new target")
	}
	pollUntil(t, "the replaced watcher ends and its successor runs", func() bool { return !first.isRunning() && second.isRunning() })
	if tgt, ok := sw.Target(key); !ok || tgt.Password != "new" {
		t.Errorf("target = %+v", tgt)
	}

	// Stop ends it; its snapshot is gone.
	sw.Stop(key)
	pollUntil(t, "the stopped watcher ends", func() bool { return !second.isRunning() })
	if _, ok := sw.Snapshot(key); ok || sw.Running() != 0 {
		t.Errorf("a stopped watcher still answers (running %d)", sw.Running())
	}

	// Shutdown waits for every goroutine.
	other := types.NamespacedName{Namespace: "ns", Name: "other"}
	if err := sw.Ensure(other, SynapseWatchTarget{Digest: "x"}); err != nil {
		t.Fatal(err)
	}
	third := f.last()
	pollUntil(t, "the third watcher runs", third.isRunning)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if third.isRunning() {
		t.Error("Start returned while a watcher still runs")
	}
}

func TestSynapseWatchersFactoryError(t *testing.T) {
	f := &fakeWatcherFactory{err: errors.New("bad TLS config")}
	sw := NewSynapseWatchers(f.make, time.Second, testr.New(t))
	err := sw.Ensure(types.NamespacedName{Namespace: "ns", Name: "m"}, SynapseWatchTarget{Addr: "redis:6379", ServerName: "a", Digest: "1"})
	if err == nil || !strings.Contains(err.Error(), "bad TLS config") || !strings.Contains(err.Error(), "redis:6379") {
		t.Errorf("Ensure = %v, want the factory's error with the address", err)
	}
	if sw.Running() != 0 {
		t.Error("a watcher that could not be made is counted")
	}
}

// TestSynapseWatchersRestartAfterRunFails: a watcher whose Run returns
// while it should run is replaced by a fresh one, and Stop while the
// goroutine swaps watchers (taking the lock) does not deadlock.
func TestSynapseWatchersRestartAfterRunFails(t *testing.T) {
	old := watcherRetryDelay
	watcherRetryDelay = time.Millisecond
	t.Cleanup(func() { watcherRetryDelay = old })
	var mu sync.Mutex
	made := 0
	factory := func(SynapseWatchTarget) (SynapseWatcher, error) {
		mu.Lock()
		defer mu.Unlock()
		made++
		return &fakeSynapseWatcher{runErr: errors.New("cannot run")}, nil
	}
	sw := NewSynapseWatchers(factory, time.Second, testr.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Start(ctx) }()
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	if err := sw.Ensure(key, SynapseWatchTarget{Digest: "1"}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the watcher is made again after Run failed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return made >= 3
	})
	stopped := make(chan struct{})
	go func() { sw.Stop(key); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop deadlocked against a restarting watcher")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSynapseMetrics(t *testing.T) {
	f := &fakeWatcherFactory{}
	sw := NewSynapseWatchers(f.make, time.Second, testr.New(t))
	key := types.NamespacedName{Namespace: "ns", Name: "matrix"}
	if err := sw.Ensure(key, SynapseWatchTarget{Digest: "1"}); err != nil {
		t.Fatal(err)
	}
	snap := healthySnapshot()
	snap.Streams[0].Writers[1].Gaps, snap.Streams[0].Writers[1].Resets = 2, 1
	snap.Streams = append(snap.Streams, synapse.Stream{Name: "quarantined_media", Writers: []synapse.Writer{{Instance: "media1", Configured: true}}})
	snap.MissingWriters = []synapse.WriterRef{{Stream: "quarantined_media", Instance: "media1"}, {Stream: "receipts", Instance: "receipts1"}}
	f.last().set(snap)

	reg := prometheus.NewPedanticRegistry()
	c := &synapseCollector{sources: map[*SynapseWatchers]bool{sw: true}}
	reg.MustRegister(c)
	want := `
# HELP tcprepl_operator_synapse_writer_missing 1 when stream_writers configures the instance for the stream and it has not announced it since the last REPLICATE settled.
# TYPE tcprepl_operator_synapse_writer_missing gauge
tcprepl_operator_synapse_writer_missing{instance="event_persister1",name="matrix",namespace="ns",stream="events"} 0
tcprepl_operator_synapse_writer_missing{instance="event_persister2",name="matrix",namespace="ns",stream="events"} 0
tcprepl_operator_synapse_writer_missing{instance="master",name="matrix",namespace="ns",stream="typing"} 0
tcprepl_operator_synapse_writer_missing{instance="media1",name="matrix",namespace="ns",stream="quarantined_media"} 1
tcprepl_operator_synapse_writer_missing{instance="receipts1",name="matrix",namespace="ns",stream="receipts"} 1
# HELP tcprepl_operator_synapse_writer_gaps_total POSITIONs whose prev_token was ahead of the last position seen from the instance (rows missed), since the watcher started.
# TYPE tcprepl_operator_synapse_writer_gaps_total counter
tcprepl_operator_synapse_writer_gaps_total{instance="event_persister1",name="matrix",namespace="ns",stream="events"} 0
tcprepl_operator_synapse_writer_gaps_total{instance="event_persister2",name="matrix",namespace="ns",stream="events"} 2
tcprepl_operator_synapse_writer_gaps_total{instance="master",name="matrix",namespace="ns",stream="typing"} 0
# HELP tcprepl_operator_synapse_writer_position Highest token the instance announced on the stream since its last reset.
# TYPE tcprepl_operator_synapse_writer_position gauge
tcprepl_operator_synapse_writer_position{instance="event_persister1",name="matrix",namespace="ns",stream="events"} 100
tcprepl_operator_synapse_writer_position{instance="event_persister2",name="matrix",namespace="ns",stream="events"} 90
tcprepl_operator_synapse_writer_position{instance="master",name="matrix",namespace="ns",stream="typing"} 7
# HELP tcprepl_operator_synapse_redis_output_buffer_bytes Output buffer (omem of CLIENT LIST TYPE pubsub) of each Redis pub/sub client, by client address.
# TYPE tcprepl_operator_synapse_redis_output_buffer_bytes gauge
tcprepl_operator_synapse_redis_output_buffer_bytes{client="10.0.0.5:4000",name="matrix",namespace="ns"} 1000
# HELP tcprepl_operator_synapse_redis_output_buffer_limit_bytes Pub/sub output buffer size at which Redis disconnects a client (the lower of the hard and soft client-output-buffer-limit); 0 means no limit.
# TYPE tcprepl_operator_synapse_redis_output_buffer_limit_bytes gauge
tcprepl_operator_synapse_redis_output_buffer_limit_bytes{name="matrix",namespace="ns"} 8.388608e+06
# HELP tcprepl_operator_synapse_subscribed 1 while the watcher of the SynapseReplication holds a Redis subscription to the deployment's channel.
# TYPE tcprepl_operator_synapse_subscribed gauge
tcprepl_operator_synapse_subscribed{name="matrix",namespace="ns"} 1
`
	names := []string{"tcprepl_operator_synapse_writer_missing", "tcprepl_operator_synapse_writer_gaps_total", "tcprepl_operator_synapse_writer_position",
		"tcprepl_operator_synapse_redis_output_buffer_bytes", "tcprepl_operator_synapse_redis_output_buffer_limit_bytes", "tcprepl_operator_synapse_subscribed"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	adv := healthySnapshot().Streams[0].Writers[0].LastAdvanceAt
	if v := testutil.ToFloat64(onlyMetric(t, reg, "tcprepl_operator_synapse_writer_last_advance_timestamp_seconds", "event_persister1")); v != float64(adv.UnixNano())/1e9 {
		t.Errorf("last advance = %v, want %v", v, float64(adv.UnixNano())/1e9)
	}

	// The resource is deleted: its series go with its watcher.
	sw.Stop(key)
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n != 0 {
		t.Errorf("%d series after the watcher stopped (err %v), want 0", n, err)
	}
}

// onlyMetric returns a collector serving the one sample of name whose
// instance label is instance.
func onlyMetric(t *testing.T, reg *prometheus.Registry, name, instance string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "instance" && l.GetValue() == instance {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name})
					g.Set(m.GetGauge().GetValue())
					return g
				}
			}
		}
	}
	t.Fatalf("no %s{instance=%q}", name, instance)
	return nil
}
