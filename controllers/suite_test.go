package controllers

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tcprepl/tcprepl/internal/probe"
	"github.com/tcprepl/tcprepl/internal/testenv"
)

// The envtest suite runs against a real kube-apiserver and etcd (built by
// `make tools` into KUBEBUILDER_ASSETS). Every test gets its own namespace
// and, where it needs controllers, its own manager scoped to that namespace,
// so tests cannot see each other's objects.
var (
	testEnv *envtest.Environment
	testCfg *rest.Config
	k8s     client.Client
	envSkip string
	// envMissing says envSkip is for missing binaries, not -short.
	envMissing bool
	nsCounter  int
	nsMu       sync.Mutex
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	switch {
	case os.Getenv("KUBEBUILDER_ASSETS") == "":
		envSkip = "KUBEBUILDER_ASSETS is not set: run `make tools` and test through the Makefile (or export KUBEBUILDER_ASSETS=bin/k8s/1.37.2) to run the envtest suite against a real kube-apiserver"
		envMissing = true
		return m.Run()
	case testing.Short():
		envSkip = "-short: the envtest suite needs a kube-apiserver and etcd"
		return m.Run()
	}
	logf.SetLogger(logr.Discard())
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	testCfg, err = testEnv.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start envtest (KUBEBUILDER_ASSETS=%s): %v\n", os.Getenv("KUBEBUILDER_ASSETS"), err)
		return 1
	}
	defer func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
	}()
	k8s, err = client.New(testCfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		return 1
	}
	return m.Run()
}

// requireEnv skips a test that needs the API server when there is none:
// under -short, and where the binaries are missing (a failure in CI).
func requireEnv(t *testing.T) {
	t.Helper()
	switch {
	case envMissing:
		testenv.SkipOrFail(t, envSkip)
	case envSkip != "":
		t.Skip(envSkip)
	}
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	nsMu.Lock()
	nsCounter++
	name := fmt.Sprintf("t%d-%d", nsCounter, time.Now().UnixNano()%100000)
	nsMu.Unlock()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return name
}

// fakeProbes records what the controllers ask of the probes and serves
// snapshots the test sets.
type fakeProbes struct {
	mu      sync.Mutex
	targets map[types.NamespacedName]ProbeTarget
	stopped map[types.NamespacedName]int
	snaps   map[types.NamespacedName]probe.Snapshot
}

func newFakeProbes() *fakeProbes {
	return &fakeProbes{
		targets: map[types.NamespacedName]ProbeTarget{},
		stopped: map[types.NamespacedName]int{},
		snaps:   map[types.NamespacedName]probe.Snapshot{},
	}
}

func (f *fakeProbes) Ensure(key types.NamespacedName, t ProbeTarget) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets[key] = t
	return nil
}

func (f *fakeProbes) Stop(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.targets, key)
	f.stopped[key]++
}

func (f *fakeProbes) Snapshot(key types.NamespacedName) (probe.Snapshot, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snaps[key]
	return s, ok
}

func (f *fakeProbes) target(key types.NamespacedName) (ProbeTarget, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.targets[key]
	return t, ok
}

func (f *fakeProbes) setSnapshot(key types.NamespacedName, s probe.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps[key] = s
}

func (f *fakeProbes) stops(key types.NamespacedName) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopped[key]
}

// startOperator runs both controllers for one namespace until the test
// ends. opts.Observer/ProbeController select fakes or the real probes.
func startOperator(t *testing.T, ns string, opts OperatorOptions) *ProbeManager {
	t.Helper()
	mgr, err := ctrl.NewManager(testCfg, ctrl.Options{
		Scheme:                 NewScheme(),
		Cache:                  CacheOptions(ns),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Each test has its own manager; controller names repeat.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Logger:     testr.NewWithOptions(t, testr.Options{Verbosity: 0}),
	})
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	if opts.Build.DefaultImage == "" {
		opts.Build = testOpts
	}
	if opts.StatusInterval == 0 {
		opts.StatusInterval = time.Second
	}
	if opts.ProbePollInterval == 0 {
		opts.ProbePollInterval = 100 * time.Millisecond
	}
	if opts.WorkerReader == nil {
		// The tests' pods have made-up IPs: do not wait long on them.
		opts.WorkerReader = &HTTPWorkerReader{Client: &http.Client{Timeout: 100 * time.Millisecond}}
	}
	opts.Logger = testr.New(t)
	pm, err := SetupOperator(mgr, opts)
	if err != nil {
		t.Fatalf("setup operator: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return pm
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}
