package monitoring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tcprepl/tcprepl/controllers"
	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/probe"
	"github.com/tcprepl/tcprepl/internal/worker"
)

// metricInfo is what is known of one registered metric family.
type metricInfo struct {
	// labels are the label names of its series: from its descriptions
	// and from the series gathered.
	labels map[string]bool
	// typ is its type when series were gathered; nil when only its
	// description was seen.
	typ *dto.MetricType
}

// registered maps family names to what is known of them.
type registered map[string]*metricInfo

func (r registered) add(name string, labels ...string) *metricInfo {
	mi := r[name]
	if mi == nil {
		mi = &metricInfo{labels: map[string]bool{}}
		r[name] = mi
	}
	for _, l := range labels {
		mi.labels[l] = true
	}
	return mi
}

// addGathered adds the families g gathers, with their series' labels and
// types.
func (r registered) addGathered(t *testing.T, g prometheus.Gatherer) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		mi := r.add(mf.GetName())
		mi.typ = mf.Type
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				mi.labels[l.GetName()] = true
			}
		}
	}
}

// names returns the series names a family gives in the exposition format:
// a histogram's or summary's _bucket, _sum and _count besides its own.
func (r registered) seriesNames() map[string]string {
	out := map[string]string{}
	for name, mi := range r {
		out[name] = name
		if mi.typ == nil {
			continue
		}
		switch *mi.typ {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[name+"_bucket"] = name
			out[name+"_sum"] = name
			out[name+"_count"] = name
		case dto.MetricType_SUMMARY:
			out[name+"_sum"] = name
			out[name+"_count"] = name
		}
	}
	return out
}

// recorder is a real registry that also records the description of every
// collector registered on it, so families without series yet (a vector
// nothing has been set on) are known too.
type recorder struct {
	*prometheus.Registry
	mu  sync.Mutex
	reg registered
	err error
}

func newRecorder() *recorder {
	return &recorder{Registry: prometheus.NewRegistry(), reg: registered{}}
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		name, labels, err := parseDesc(d)
		if err != nil {
			r.err = errors.Join(r.err, err)
			continue
		}
		r.reg.add(name, labels...)
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// registered returns what was described on the recorder and what it
// gathers now.
func (r *recorder) registered(t *testing.T) registered {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		t.Fatal(r.err)
	}
	out := registered{}
	for n, mi := range r.reg {
		out.add(n, keysOf(mi.labels)...)
	}
	out.addGathered(t, r.Registry)
	return out
}

// descPattern matches client_golang's Desc.String(), the only way a Desc
// tells its name and labels.
var descPattern = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: "(?:[^"\\]|\\.)*", unit: "(?:[^"\\]|\\.)*", constLabels: \{(.*)\}, variableLabels: \{(.*)\}\}$`)
var constLabelPattern = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

func parseDesc(d *prometheus.Desc) (string, []string, error) {
	m := descPattern.FindStringSubmatch(d.String())
	if m == nil {
		return "", nil, fmt.Errorf("cannot read the name of %s: client_golang's Desc.String changed; update descPattern", d)
	}
	name, err := strconv.Unquote(m[1])
	if err != nil {
		return "", nil, fmt.Errorf("desc %s: %w", d, err)
	}
	var labels []string
	for _, c := range constLabelPattern.FindAllStringSubmatch(m[2], -1) {
		labels = append(labels, c[1])
	}
	for v := range strings.SplitSeq(m[3], ",") {
		if v = strings.TrimSuffix(strings.TrimPrefix(v, "c("), ")"); v != "" {
			labels = append(labels, v)
		}
	}
	return name, labels, nil
}

var (
	registeredMu    sync.Mutex
	registeredCache map[string]registered
)

// registeredMetrics is collectRegistered, once per test process: the
// operator's metrics register once per process.
func registeredMetrics(t *testing.T) map[string]registered {
	t.Helper()
	registeredMu.Lock()
	defer registeredMu.Unlock()
	if registeredCache == nil {
		registeredCache = collectRegistered(t)
	}
	return registeredCache
}

// collectRegistered runs the operator's metrics and probe, a real master
// and a real worker connected to it, and returns the metric families each
// process registers, by process: "operator", "master", "worker".
//
// The operator's are what RegisterMetrics puts on controller-runtime's
// registry (swapped for a recorder) and what a running probe adds;
// the SynapseReplication watchers' series and controller-runtime's own are
// not included (the dashboard does not use them). The master's are
// gathered from the registry its /metrics serves, after a publish and
// with the worker and the probe connected; the worker's are described on
// and gathered from its registry once it has caught up.
func collectRegistered(t *testing.T) map[string]registered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	masterReg := prometheus.NewRegistry()
	m, err := master.New(masterapi.Config{ServerName: "matrix.example.org", Ephemeral: true}.WithDefaults(),
		master.Options{Logger: logr.Discard(), Registry: masterReg})
	if err != nil {
		t.Fatal(err)
	}
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(replLn, httpLn) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := m.Shutdown(sctx); err != nil {
			t.Errorf("master shutdown: %v", err)
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("master Serve: %v", err)
		}
	}()
	tok, err := m.Publish(ctx, "typing", []json.RawMessage{json.RawMessage(`["!room:x", ["@a:x"]]`)})
	if err != nil {
		t.Fatal(err)
	}

	// The worker, on its own registry as `tcprepl worker` runs it.
	workerRec := newRecorder()
	w, err := worker.New(worker.Config{
		Address: replLn.Addr().String(), ServerName: "matrix.example.org", Name: "hs-events-0", Streams: []string{"typing"},
		StateDir: t.TempDir(), Sink: "stdout", Stdout: io.Discard, Logger: logr.Discard(), Registerer: workerRec,
		From: new(int64),
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() {
		wcancel()
		if err := <-wdone; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	// The operator: its metrics and a probe of the master, registered on
	// controller-runtime's registry as `tcprepl operator` does.
	opRec := newRecorder()
	saved := ctrlmetrics.Registry
	ctrlmetrics.Registry = opRec
	defer func() { ctrlmetrics.Registry = saved }()
	if err := controllers.RegisterMetrics(); err != nil {
		t.Fatal(err)
	}
	p, err := probe.New(probe.Config{
		Address: replLn.Addr().String(), ServerName: "matrix.example.org", HTTPURL: "http://" + httpLn.Addr().String(),
		HeartbeatInterval: 20 * time.Millisecond, Logger: logr.Discard(), Registerer: ctrlmetrics.Registry,
		MasterNamespace: "apps", MasterName: "hs-master",
	})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- p.Run(pctx) }()
	defer func() {
		pcancel()
		if err := <-pdone; err != nil {
			t.Errorf("probe: %v", err)
		}
	}()

	for {
		s, ws := p.Snapshot(), w.Status()
		if s.Reachable && s.Heartbeat.Samples > 0 && s.ConnectionsAvailable && len(s.Connections) > 0 && ws.Ready && ws.Positions["typing"] == tok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the probe and the worker did not catch up: probe %+v, worker %+v", s, ws)
		case <-time.After(20 * time.Millisecond):
		}
	}
	out := map[string]registered{"operator": opRec.registered(t), "worker": workerRec.registered(t), "master": {}}
	out["master"].addGathered(t, masterReg)
	return out
}
