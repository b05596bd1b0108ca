package probe

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// snapshotCollector exports a fixed snapshot through the probe's collector.
type snapshotCollector struct {
	*collector
	s Snapshot
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch, c.s) }

// gatherSnapshot exports s for a probe configured with cfg through a
// pedantic registry (which checks every series against its description)
// and returns the families by name.
func gatherSnapshot(t *testing.T, cfg Config, s Snapshot) map[string]*dto.MetricFamily {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(snapshotCollector{newCollector(p), s}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestProbeMetricLabels: the probe's series name the master by resource
// (namespace, master) when the operator gives one, by address otherwise;
// only tcprepl_probe_info carries the address and server name.
func TestProbeMetricLabels(t *testing.T) {
	snap := Snapshot{
		Reachable:            true,
		Streams:              []StreamPosition{{Name: "events", Token: 7, RowsPerSecond: 2}},
		Heartbeat:            HeartbeatStats{Samples: 3, P50: time.Millisecond, P99: 2 * time.Millisecond, Max: 3 * time.Millisecond},
		ConnectionsAvailable: true,
		Connections:          []Connection{{ID: 4, Name: "w-0", MaxSecondsBehind: 1.5}},
	}
	tests := map[string]struct {
		namespace, name string
		want            map[string]string // constant labels on every series
	}{
		"a ReplicationMaster": {namespace: "apps", name: "m1", want: map[string]string{"namespace": "apps", "master": "m1"}},
		"a probe run by hand": {want: map[string]string{"master": "10.0.0.9:9092"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mfs := gatherSnapshot(t, Config{Address: "10.0.0.9:9092", ServerName: "hs.example", MasterNamespace: tc.namespace, MasterName: tc.name}, snap)
			if len(mfs) == 0 {
				t.Fatal("no series")
			}
			for fam, mf := range mfs {
				for _, m := range mf.GetMetric() {
					got := labelsOf(m)
					for k, v := range tc.want {
						if got[k] != v {
							t.Errorf("%s%v: %s=%q, want %q", fam, got, k, got[k], v)
						}
					}
					if _, ok := got["namespace"]; ok && tc.namespace == "" {
						t.Errorf("%s%v carries a namespace without a resource", fam, got)
					}
					if _, ok := got["id"]; ok {
						t.Errorf("%s%v is labelled by connection id", fam, got)
					}
					_, hasAddr := got["address"]
					if hasAddr != (fam == "tcprepl_probe_info") {
						t.Errorf("%s%v: only tcprepl_probe_info carries the address", fam, got)
					}
				}
			}
			info := mfs["tcprepl_probe_info"]
			if info == nil || len(info.GetMetric()) != 1 {
				t.Fatalf("tcprepl_probe_info = %v, want one series", info)
			}
			got := labelsOf(info.GetMetric()[0])
			if got["address"] != "10.0.0.9:9092" || got["server_name"] != "hs.example" || info.GetMetric()[0].GetGauge().GetValue() != 1 {
				t.Errorf("tcprepl_probe_info = %v %v", got, info.GetMetric()[0].GetGauge().GetValue())
			}
		})
	}
}

// TestProbeConnectionLagBounded: connection ids and client-chosen names do
// not make series without bound. Connections sharing a name report the
// worst of them; past replication.MaxMetricNames names the rest share
// _other.
func TestProbeConnectionLagBounded(t *testing.T) {
	tests := map[string]struct {
		conns      []Connection
		wantSeries int
		wantLag    map[string]float64 // by name label, where checked
	}{
		"reconnects of one name are one series, the worst lag": {
			conns:      []Connection{{ID: 1, Name: "w-0", MaxSecondsBehind: 1}, {ID: 2, Name: "w-0", MaxSecondsBehind: 4}, {ID: 3, Name: "w-1", MaxSecondsBehind: 2}},
			wantSeries: 2,
			wantLag:    map[string]float64{"w-0": 4, "w-1": 2},
		},
		"thousands of distinct names are bounded": {
			conns: func() []Connection {
				var cs []Connection
				for i := range 3000 {
					cs = append(cs, Connection{ID: uint64(i), Name: fmt.Sprintf("client-%05d", i), MaxSecondsBehind: float64(i)})
				}
				return cs
			}(),
			wantSeries: replication.MaxMetricNames + 1,
			wantLag:    map[string]float64{replication.OtherMetricName: 2999},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mfs := gatherSnapshot(t, Config{Address: "m:9092", ServerName: "x", MasterNamespace: "apps", MasterName: "m1"},
				Snapshot{ConnectionsAvailable: true, Connections: tc.conns})
			lag := mfs["tcprepl_probe_connection_max_seconds_behind"]
			if got := len(lag.GetMetric()); got != tc.wantSeries {
				t.Fatalf("%d connection lag series, want %d", got, tc.wantSeries)
			}
			byName := map[string]float64{}
			for _, m := range lag.GetMetric() {
				l := labelsOf(m)
				byName[l["name"]] = m.GetGauge().GetValue()
				keys := make([]string, 0, len(l))
				for k := range l {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				if !slices.Equal(keys, []string{"master", "name", "namespace"}) {
					t.Errorf("series labels %v, want master, name, namespace", keys)
				}
			}
			for n, want := range tc.wantLag {
				if byName[n] != want {
					t.Errorf("lag of %q = %v, want %v", n, byName[n], want)
				}
			}
			if got := mfs["tcprepl_probe_connections"].GetMetric()[0].GetGauge().GetValue(); got != float64(len(tc.conns)) {
				t.Errorf("tcprepl_probe_connections = %v, want %d", got, len(tc.conns))
			}
		})
	}
}
