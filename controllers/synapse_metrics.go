package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tcprepl/tcprepl/internal/synapse"
)

// The SynapseReplication metrics are read from the watchers' snapshots at
// scrape time, so they are as fresh as the watcher and a deleted resource's
// series disappear with its watcher. Their names and labels are part of the
// chart's PrometheusRule contract.
var (
	synapseWriterLabels = []string{"namespace", "name", "stream", "instance"}

	synapseSubscribedDesc = prometheus.NewDesc("tcprepl_operator_synapse_subscribed",
		"1 while the watcher of the SynapseReplication holds a Redis subscription to the deployment's channel.",
		[]string{"namespace", "name"}, nil)
	synapseWriterPositionDesc = prometheus.NewDesc("tcprepl_operator_synapse_writer_position",
		"Highest token the instance announced on the stream since its last reset.",
		synapseWriterLabels, nil)
	synapseWriterLastAdvanceDesc = prometheus.NewDesc("tcprepl_operator_synapse_writer_last_advance_timestamp_seconds",
		"Unix time the instance's position on the stream last grew; absent until it first does.",
		synapseWriterLabels, nil)
	synapseWriterGapsDesc = prometheus.NewDesc("tcprepl_operator_synapse_writer_gaps_total",
		"POSITIONs whose prev_token was ahead of the last position seen from the instance (rows missed), since the watcher started.",
		synapseWriterLabels, nil)
	synapseWriterResetsDesc = prometheus.NewDesc("tcprepl_operator_synapse_writer_resets_total",
		"Times the instance's position on the stream went back (a restart), since the watcher started.",
		synapseWriterLabels, nil)
	synapseWriterMissingDesc = prometheus.NewDesc("tcprepl_operator_synapse_writer_missing",
		"1 when stream_writers configures the instance for the stream and it has not announced it since the last REPLICATE settled.",
		synapseWriterLabels, nil)
	synapseWriterUnexpectedDesc = prometheus.NewDesc("tcprepl_operator_synapse_writer_unexpected",
		"1 when the instance writes a stream stream_writers does not give it.",
		synapseWriterLabels, nil)
	synapseOutputBufferDesc = prometheus.NewDesc("tcprepl_operator_synapse_redis_output_buffer_bytes",
		"Output buffer (omem of CLIENT LIST TYPE pubsub) of each Redis pub/sub client, by client address.",
		[]string{"namespace", "name", "client"}, nil)
	synapseOutputBufferLimitDesc = prometheus.NewDesc("tcprepl_operator_synapse_redis_output_buffer_limit_bytes",
		"Pub/sub output buffer size at which Redis disconnects a client (the lower of the hard and soft client-output-buffer-limit); 0 means no limit.",
		[]string{"namespace", "name"}, nil)
	synapseSubscribersDesc = prometheus.NewDesc("tcprepl_operator_synapse_redis_subscribers",
		"PUBSUB NUMSUB of the deployment's channel, the watcher included.",
		[]string{"namespace", "name"}, nil)

	synapseCollectorMu sync.Mutex
	synapseCollectorOn *synapseCollector
)

// synapseCollector exports every running watcher's snapshot.
type synapseCollector struct {
	mu      sync.Mutex
	sources map[*SynapseWatchers]bool
}

func (c *synapseCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		synapseSubscribedDesc, synapseWriterPositionDesc, synapseWriterLastAdvanceDesc, synapseWriterGapsDesc,
		synapseWriterResetsDesc, synapseWriterMissingDesc, synapseWriterUnexpectedDesc,
		synapseOutputBufferDesc, synapseOutputBufferLimitDesc, synapseSubscribersDesc,
	} {
		ch <- d
	}
}

func (c *synapseCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	var sources []*SynapseWatchers
	for w := range c.sources {
		sources = append(sources, w)
	}
	c.mu.Unlock()
	for _, w := range sources {
		for _, ks := range w.snapshots() {
			collectSynapseSnapshot(ch, ks.key.Namespace, ks.key.Name, ks.snap)
		}
	}
}

// collectSynapseSnapshot emits one resource's series.
func collectSynapseSnapshot(ch chan<- prometheus.Metric, namespace, name string, snap synapse.Snapshot) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(synapseSubscribedDesc, b2f(snap.Subscribed), namespace, name)
	missing := map[synapse.WriterRef]bool{}
	for _, r := range snap.MissingWriters {
		missing[r] = true
	}
	unexpected := map[synapse.WriterRef]bool{}
	for _, r := range snap.UnexpectedWriters {
		unexpected[r] = true
	}
	seen := map[synapse.WriterRef]bool{}
	for _, s := range snap.Streams {
		for _, wr := range s.Writers {
			ref := synapse.WriterRef{Stream: s.Name, Instance: wr.Instance}
			seen[ref] = true
			l := []string{namespace, name, s.Name, wr.Instance}
			if wr.Announced {
				gauge(synapseWriterPositionDesc, float64(wr.Position), l...)
				counter(synapseWriterGapsDesc, float64(wr.Gaps), l...)
				counter(synapseWriterResetsDesc, float64(wr.Resets), l...)
			}
			if !wr.LastAdvanceAt.IsZero() {
				gauge(synapseWriterLastAdvanceDesc, float64(wr.LastAdvanceAt.UnixNano())/1e9, l...)
			}
			if wr.Configured || missing[ref] {
				gauge(synapseWriterMissingDesc, b2f(missing[ref]), l...)
			}
			gauge(synapseWriterUnexpectedDesc, b2f(unexpected[ref]), l...)
		}
	}
	// A missing writer the snapshot does not list under its stream still
	// gets its series: the alert must fire.
	for _, r := range snap.MissingWriters {
		if !seen[r] {
			gauge(synapseWriterMissingDesc, 1, namespace, name, r.Stream, r.Instance)
		}
	}
	if snap.Subscribed {
		gauge(synapseSubscribersDesc, float64(snap.Redis.Subscribers), namespace, name)
		gauge(synapseOutputBufferLimitDesc, float64(outputBufferLimit(snap.Redis)), namespace, name)
		clients := map[string]bool{}
		for _, cl := range snap.Redis.Clients {
			// Two connections can share an address only after one closed;
			// keep the first (largest) so the series are unique.
			if clients[cl.Addr] {
				continue
			}
			clients[cl.Addr] = true
			gauge(synapseOutputBufferDesc, float64(cl.OutputBufferBytes), namespace, name, cl.Addr)
		}
	}
}

// registerSynapseMetrics adds w's watchers to the SynapseReplication
// metrics on controller-runtime's registry (the collector is registered
// once per process); unregisterSynapseMetrics removes them when w stops.
func registerSynapseMetrics(w *SynapseWatchers) error {
	synapseCollectorMu.Lock()
	defer synapseCollectorMu.Unlock()
	if synapseCollectorOn == nil {
		c := &synapseCollector{sources: map[*SynapseWatchers]bool{}}
		if err := ctrlmetrics.Registry.Register(c); err != nil {
			return err
		}
		synapseCollectorOn = c
	}
	synapseCollectorOn.mu.Lock()
	synapseCollectorOn.sources[w] = true
	synapseCollectorOn.mu.Unlock()
	return nil
}

func unregisterSynapseMetrics(w *SynapseWatchers) {
	synapseCollectorMu.Lock()
	c := synapseCollectorOn
	synapseCollectorMu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.sources, w)
	c.mu.Unlock()
}
