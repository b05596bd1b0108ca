package replication

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather returns every sample of reg as "name{labels} value" strings.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// TestMetricsUseSynapseNames: a server and a client on one registry export
// the 2020 metric names with their labels.
func TestMetricsUseSynapseNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := NewMemorySource("caches")
	h := &recordingHandler{}
	srv, addr := startServer(t, ServerConfig{Registerer: reg}, src, h)
	ch := newRecordingClientHandler()
	client := runClient(t, ClientConfig{Address: addr, Name: "w1", Handler: ch, Registerer: reg, InitialBackoff: time.Hour,
		Streams: []StreamRequest{{Stream: "caches", Now: true}}})
	waitFor(t, "caught up", func() bool { return ch.caughtUpCount() == 1 })
	waitForLive(t, srv, "caches")
	srv.Publish(src.Append("caches", cacheRow(1), cacheRow(2)))
	waitFor(t, "rows", func() bool { return len(ch.rowTokens("caches")) == 2 })
	for _, cmd := range []Command{
		UserSyncCommand{UserID: "@a:x", Active: true}, FederationAckCommand{Token: 1},
		RemovePusherCommand{AppID: "a", PushKey: "k", UserID: "u"}, InvalidateCacheCommand{CacheFunc: "f", Keys: row(`[]`)},
		UserIPCommand{UserID: "u", LastSeen: 1},
	} {
		if err := client.Send(cmd); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "commands", func() bool { return len(h.commands()) == 5 })
	// The gauges of both sides' queues fall to zero only once each writer
	// has finished its write, which may be after the peer has read it.
	pendingGauge := "synapse_replication_tcp_protocol_pending_commands{name=w1}"
	sendBufferGauge := "synapse_replication_tcp_protocol_transport_send_buffer{name=w1}"
	waitFor(t, "both queues drained", func() bool {
		g := gather(t, reg)
		return g[pendingGauge] == 0 && g[sendBufferGauge] == 0
	})

	got := gather(t, reg)
	want := map[string]float64{
		"synapse_replication_tcp_resource_stream_updates{stream_name=caches}":           2,
		"synapse_replication_tcp_protocol_inbound_rdata_count{stream_name=caches}":      2,
		"synapse_replication_tcp_resource_total_connections{}":                          1,
		"synapse_replication_tcp_resource_connections_per_stream{stream_name=caches}":   1,
		"synapse_replication_tcp_resource_user_sync{}":                                  1,
		"synapse_replication_tcp_resource_federation_ack{}":                             1,
		"synapse_replication_tcp_resource_remove_pusher{}":                              1,
		"synapse_replication_tcp_resource_invalidate_cache{}":                           1,
		"synapse_replication_tcp_resource_user_ip_cache{}":                              1,
		"synapse_replication_tcp_protocol_inbound_commands{command=USER_SYNC,name=w1}":  1,
		"synapse_replication_tcp_protocol_outbound_commands{command=USER_SYNC,name=w1}": 1,
		"synapse_replication_tcp_protocol_outbound_commands{command=RDATA,name=w1}":     2,
		"synapse_replication_tcp_protocol_inbound_commands{command=RDATA,name=w1}":      2,
		"synapse_replication_tcp_protocol_pending_commands{name=w1}":                    0,
		"synapse_replication_tcp_protocol_transport_send_buffer{name=w1}":               0,
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}

	// A closed connection counts its reason.
	srv.conns1(t).CloseWithError("bye")
	waitFor(t, "close counted", func() bool {
		return gather(t, reg)["synapse_replication_tcp_protocol_close_reason{reason_type=closed_by_owner}"] == 1
	})
}

// TestMetricsRegistryShared: a second server on the same registry reuses the
// registered metrics instead of failing.
func TestMetricsRegistryShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	for i := 0; i < 2; i++ {
		s, err := NewServer(ServerConfig{ServerName: "s", Registerer: reg}, NewMemorySource("caches"), nil)
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		_ = s.Shutdown(t.Context())
	}
	// A registry already holding a different collector under our name.
	bad := prometheus.NewRegistry()
	bad.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: metricCloseReason, Help: "x"}))
	if _, err := NewServer(ServerConfig{ServerName: "s", Registerer: bad}, NewMemorySource("caches"), nil); err == nil {
		t.Fatal("NewServer accepted a registry with a conflicting metric")
	}
}
