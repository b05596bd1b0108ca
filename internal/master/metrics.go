package master

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// metrics are the master's own metrics. The protocol server registers the
// Synapse metrics of docs/protocol.md in the same registry, including the
// per-command synapse_replication_tcp_resource_* counters, which it counts
// as each command arrives, before the master's effects run.
type metrics struct {
	publishedRows  *prometheus.CounterVec
	publishErrors  *prometheus.CounterVec
	publishSeconds prometheus.Histogram
}

func newMetrics(m *Master) (*metrics, error) {
	x := &metrics{
		publishedRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcprepl_master_published_rows_total", Help: "Rows durably appended, by stream.",
		}, []string{"stream"}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcprepl_master_publish_errors_total", Help: "Appends to the log that failed, by stream.",
		}, []string{"stream"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tcprepl_master_publish_duration_seconds",
			Help:    "Time from a validated publish to its rows being durable and handed to the protocol server.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	for _, c := range []prometheus.Collector{
		// The usual process and Go runtime metrics: memory, goroutines,
		// file descriptors, CPU.
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		x.publishedRows, x.publishErrors, x.publishSeconds, &positionCollector{m: m}, activeGauge(m)} {
		if err := m.registry.Register(c); err != nil {
			return nil, fmt.Errorf("register master metrics: %w", err)
		}
	}
	return x, nil
}

// positionCollector computes positions and lag at scrape time from the log
// and the connection table, so nothing has to be kept up to date on the
// publish path.
type positionCollector struct{ m *Master }

var (
	streamPositionDesc = prometheus.NewDesc("tcprepl_master_stream_position",
		"Current (newest) token of each stream.", []string{"stream"}, nil)
	streamOldestDesc = prometheus.NewDesc("tcprepl_master_stream_oldest_token",
		"Oldest token still held by the log for each stream.", []string{"stream"}, nil)
	streamRateDesc = prometheus.NewDesc("tcprepl_master_stream_rows_per_second",
		"Recent publish rate of each stream.", []string{"stream"}, nil)
	// Lag is labelled by connection name, not id: one series per
	// connection (2,500 connections made /metrics 7.2 MB) let clients grow
	// the scrape without bound. Connections sharing a name report the
	// largest lag among them; names are bounded as the Synapse metrics'
	// (replication.MetricNameLabels).
	connTokensBehindDesc = prometheus.NewDesc("tcprepl_master_connection_tokens_behind",
		"Tokens published but not yet sent, the most among the connections of one name, per stream.", []string{"name", "stream"}, nil)
	connSecondsBehindDesc = prometheus.NewDesc("tcprepl_master_connection_seconds_behind",
		"Age of the oldest token not yet sent, the oldest among the connections of one name, per stream.", []string{"name", "stream"}, nil)
)

func (c *positionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{streamPositionDesc, streamOldestDesc, streamRateDesc, connTokensBehindDesc, connSecondsBehindDesc} {
		ch <- d
	}
}

func (c *positionCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.StreamStatuses() {
		ch <- prometheus.MustNewConstMetric(streamPositionDesc, prometheus.GaugeValue, float64(s.Token), s.Name)
		ch <- prometheus.MustNewConstMetric(streamOldestDesc, prometheus.GaugeValue, float64(s.OldestToken), s.Name)
		ch <- prometheus.MustNewConstMetric(streamRateDesc, prometheus.GaugeValue, s.RowsPerSecond, s.Name)
	}
	table := c.m.ConnectionTable()
	names := make([]string, len(table))
	for i, conn := range table {
		names[i] = conn.Name
	}
	labels := replication.MetricNameLabels(names)
	type key struct{ name, stream string }
	type lag struct{ tokens, seconds float64 }
	lags := map[key]lag{}
	for _, conn := range table {
		for _, s := range conn.Streams {
			k := key{labels[conn.Name], s.Name}
			l := lags[k]
			lags[k] = lag{max(l.tokens, float64(s.TokensBehind)), max(l.seconds, s.SecondsBehind)}
		}
	}
	for k, l := range lags {
		ch <- prometheus.MustNewConstMetric(connTokensBehindDesc, prometheus.GaugeValue, l.tokens, k.name, k.stream)
		ch <- prometheus.MustNewConstMetric(connSecondsBehindDesc, prometheus.GaugeValue, l.seconds, k.name, k.stream)
	}
}
