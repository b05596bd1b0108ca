package controllers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// writeCounter counts the operator's API writes (every request that is
// not a read) by verb and resource.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64
}

func (c *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet {
			c.total.Add(1)
			key := req.Method + " " + resourceOf(req.URL.Path)
			c.mu.Lock()
			c.counts[key]++
			c.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

func (c *writeCounter) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	c.total.Store(0)
	return out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// resourceOf turns /apis/apps/v1/namespaces/x/statefulsets/y into
// "statefulsets" (and .../status into "statefulsets/status").
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			rest := parts[i+2:]
			if len(rest) >= 3 {
				return rest[0] + "/" + rest[2]
			}
			return rest[0]
		}
	}
	return path
}

// simProber stands in for a probe of a busy master: every heartbeat the
// caches stream moves (the heartbeat itself is a caches row), the heartbeat
// latency jitters, and every worker connection's lag changes.
type simProber struct {
	start   time.Time
	workers []string
	seed    uint64
	// quiet freezes the simulated master: nothing moves.
	quiet bool
}

func (s *simProber) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (s *simProber) Snapshot() probe.Snapshot {
	now := time.Now()
	tick := int64(now.Sub(s.start) / time.Second) // one heartbeat a second: harsher than the 5s default
	if s.quiet {
		tick = 0
	}
	r := rand.New(rand.NewPCG(s.seed, uint64(tick)))
	snap := probe.Snapshot{
		MeasuredAt: now, Reachable: true, ServerName: "bench.example.org", ConnectionsAvailable: true,
		Streams: []probe.StreamPosition{
			{Name: "caches", Token: tick, RowsPerSecond: 1},
			{Name: "events", Token: 1000 + tick*50, RowsPerSecond: 50},
		},
		Heartbeat: probe.HeartbeatStats{Last: time.Duration(200+r.IntN(800)) * time.Microsecond, P50: 500 * time.Microsecond, P99: time.Millisecond, Max: 2 * time.Millisecond, Samples: 10},
	}
	for _, w := range s.workers {
		lag := r.Float64() * 0.2
		snap.Connections = append(snap.Connections, probe.Connection{
			Name: w, RemoteAddr: "10.0.0.1:1", Since: s.start,
			Streams: []probe.ConnectionStream{
				{Name: "caches", Token: tick},
				{Name: "events", Token: 1000 + tick*50 - int64(r.IntN(3)), TokensBehind: int64(r.IntN(3)), SecondsBehind: lag},
			},
		})
	}
	return snap
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkOperatorScale measures, against the real kube-apiserver:
//   - how long the operator takes to converge a topology of M masters and
//     M*W workers (every owned object created, every status written with
//     observedGeneration), and
//   - the operator's API writes per minute per resource at steady state,
//     with simulated probes whose positions, heartbeat and lag change every
//     second (the worst case for status writes).
//
// Run once (it is a scenario, not a loop):
//
//	KUBEBUILDER_ASSETS=$PWD/bin/k8s/1.37.2 go test -run '^$' -bench BenchmarkOperatorScale -benchtime 1x -timeout 30m ./controllers/
//
// TCPREPL_BENCH_MASTERS (100), TCPREPL_BENCH_WORKERS_PER_MASTER (10) and
// TCPREPL_BENCH_STEADY (60s) change the scenario; TCPREPL_BENCH_QUIET=1
// freezes the simulated masters (nothing published, no heartbeat moving) to
// show what an idle topology costs; TCPREPL_BENCH_STATUS_INTERVAL sets the
// operator's --status-interval.
func BenchmarkOperatorScale(b *testing.B) {
	if envSkip != "" {
		b.Skip(envSkip)
	}
	masters := envInt("TCPREPL_BENCH_MASTERS", 100)
	perMaster := envInt("TCPREPL_BENCH_WORKERS_PER_MASTER", 10)
	steady := envDuration("TCPREPL_BENCH_STEADY", 60*time.Second)
	statusInterval := envDuration("TCPREPL_BENCH_STATUS_INTERVAL", DefaultStatusInterval)
	for range b.N {
		runScaleScenario(b, masters, perMaster, steady, statusInterval, os.Getenv("TCPREPL_BENCH_QUIET") == "1")
	}
}

func runScaleScenario(b *testing.B, masters, perMaster int, steady, statusInterval time.Duration, quiet bool) {
	ctx := context.Background()
	ns := fmt.Sprintf("bench-%d", time.Now().UnixNano()%1000000)
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}

	// The pods the simulated connections belong to: one per worker,
	// created before the operator starts so that only the operator's
	// writes are counted during the scenario.
	workersOf := map[string][]string{}
	for i := range masters {
		mname := fmt.Sprintf("m%03d", i)
		for j := range perMaster {
			workersOf[mname] = append(workersOf[mname], fmt.Sprintf("%s-w%02d-pod", mname, j))
		}
	}

	counter := &writeCounter{counts: map[string]int{}}
	cfg := rest.CopyConfig(testCfg)
	cfg.QPS = -1 // as the operator runs: no client-side throttling
	cfg.Wrap(counter.wrap)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 NewScheme(),
		Cache:                  CacheOptions(ns),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var seed atomic.Uint64
	_, err = SetupOperator(mgr, OperatorOptions{
		Build: testOpts,
		NewProber: func(tg ProbeTarget) (Prober, error) {
			name := strings.SplitN(tg.Address, ".", 2)[0]
			return &simProber{start: start, workers: workersOf[name], seed: seed.Add(1), quiet: quiet}, nil
		},
		StatusInterval:          statusInterval,
		ProbePollInterval:       time.Second,
		MaxConcurrentReconciles: 4,
	})
	if err != nil {
		b.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("manager: %v", err)
		}
	}()

	b.ResetTimer()
	began := time.Now()
	for i := range masters {
		m := minimalMaster(ns, fmt.Sprintf("m%03d", i))
		m.Spec.ServerName = "bench.example.org"
		if err := k8s.Create(ctx, m); err != nil {
			b.Fatal(err)
		}
		for j := range perMaster {
			w := minimalWorker(ns, fmt.Sprintf("%s-w%02d", m.Name, j), m.Name)
			if err := k8s.Create(ctx, w); err != nil {
				b.Fatal(err)
			}
		}
	}
	created := time.Since(began)

	// Pods, as the StatefulSet controller and kubelet would make them.
	for i := range masters {
		mname := fmt.Sprintf("m%03d", i)
		for j := range perMaster {
			wname := fmt.Sprintf("%s-w%02d", mname, j)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: wname + "-pod", Namespace: ns, Labels: specs.WorkerPodLabels(minimalWorker(ns, wname, mname))},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "x"}}},
			}
			if err := k8s.Create(ctx, pod); err != nil {
				b.Fatal(err)
			}
			pod.Status.PodIP = fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1)
			pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			if err := k8s.Status().Update(ctx, pod); err != nil {
				b.Fatal(err)
			}
		}
	}

	// Converged: every resource's status is at its generation, every worker
	// shows its pod connected, every master its workers.
	deadline := time.Now().Add(20 * time.Minute)
	for {
		ok, why := converged(ctx, ns, masters, perMaster)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("not converged: %s", why)
		}
		time.Sleep(500 * time.Millisecond)
	}
	convergence := time.Since(began)
	convWrites := counter.reset()
	b.StopTimer()

	// Steady state.
	time.Sleep(steady)
	steadyWrites := counter.reset()
	resources := masters + masters*perMaster
	var total int
	for _, n := range steadyWrites {
		total += n
	}
	perMin := float64(total) / steady.Minutes() / float64(resources)

	var convTotal int
	for _, n := range convWrites {
		convTotal += n
	}
	b.ReportMetric(convergence.Seconds(), "converge-s")
	b.ReportMetric(float64(convTotal), "converge-writes")
	b.ReportMetric(perMin, "writes/min/resource")
	b.Logf("%d masters, %d workers: created in %s, converged in %s with %d API writes %v", masters, masters*perMaster, created.Round(time.Millisecond), convergence.Round(time.Millisecond), convTotal, convWrites)
	b.Logf("steady state over %s (status interval %s): %d writes = %.2f per minute per resource %v", steady, statusInterval, total, perMin, steadyWrites)
	if err := k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Logf("delete namespace %s: %v", ns, err)
	}
}

func converged(ctx context.Context, ns string, masters, perMaster int) (bool, string) {
	var ml replv1.ReplicationMasterList
	if err := k8s.List(ctx, &ml, client.InNamespace(ns)); err != nil {
		return false, err.Error()
	}
	if len(ml.Items) != masters {
		return false, fmt.Sprintf("%d masters listed", len(ml.Items))
	}
	for _, m := range ml.Items {
		if m.Status.ObservedGeneration != m.Generation || int(m.Status.ConnectedWorkers) != perMaster || m.Status.Heartbeat == nil {
			return false, fmt.Sprintf("master %s status %+v", m.Name, m.Status)
		}
	}
	var wl replv1.ReplicationWorkerList
	if err := k8s.List(ctx, &wl, client.InNamespace(ns)); err != nil {
		return false, err.Error()
	}
	if len(wl.Items) != masters*perMaster {
		return false, fmt.Sprintf("%d workers listed", len(wl.Items))
	}
	for _, w := range wl.Items {
		if w.Status.ObservedGeneration != w.Generation || w.Status.Connected != "1/1" {
			return false, fmt.Sprintf("worker %s status %+v", w.Name, w.Status)
		}
	}
	var sl appsv1.StatefulSetList
	if err := k8s.List(ctx, &sl, client.InNamespace(ns), client.MatchingLabels{specs.LabelComponent: specs.ComponentWorker}); err != nil {
		return false, err.Error()
	}
	if len(sl.Items) != masters*perMaster {
		return false, fmt.Sprintf("%d worker StatefulSets", len(sl.Items))
	}
	return true, ""
}
