package probe

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// Label names of the probe's metrics. Every series names the master it
// observes by the resource (namespace and master, the ReplicationMaster's
// name), not by address: a master's pod IP changes with every restart, and
// a series per address would leave dead series behind and break joins with
// the operator's tcprepl_operator_* series. The address and server name
// are on one info series, tcprepl_probe_info.
const (
	LabelNamespace  = "namespace"
	LabelMaster     = "master"
	LabelAddress    = "address"
	LabelServerName = "server_name"
)

// collector exports a probe's snapshot as metrics. Every series carries the
// master's identity as constant labels, so one registry can hold the
// probes of many masters (the operator keeps one per master), and the
// label values are bounded: one set per master, per stream, per connection
// name (bounded as the replication metrics' names are), never per
// connection id.
type collector struct {
	p          *Probe
	info       *prometheus.Desc
	up         *prometheus.Desc
	latency    *prometheus.Desc
	samples    *prometheus.Desc
	stale      *prometheus.Desc
	position   *prometheus.Desc
	rate       *prometheus.Desc
	conns      *prometheus.Desc
	connLag    *prometheus.Desc
	connsAvail *prometheus.Desc
}

// metricLabels are the constant labels of the probe's series: the
// resource's namespace and name when the configuration gives them (the
// operator's probes), else master=<address> (a probe run by hand).
func (cfg Config) metricLabels() prometheus.Labels {
	if cfg.MasterName == "" {
		return prometheus.Labels{LabelMaster: cfg.Address}
	}
	return prometheus.Labels{LabelNamespace: cfg.MasterNamespace, LabelMaster: cfg.MasterName}
}

func newCollector(p *Probe) *collector {
	l := p.cfg.metricLabels()
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tcprepl_probe_"+name, help, labels, l)
	}
	return &collector{
		p:          p,
		info:       d("info", "Always 1: where the probe reaches the master (address) and the name it must announce (server_name).", LabelAddress, LabelServerName),
		up:         d("up", "1 while the probe holds a live, caught-up connection to the master."),
		latency:    d("heartbeat_latency_seconds", "Heartbeat round trip (INVALIDATE_CACHE relayed on caches) over the recent window; quantile 1 is the max.", "quantile"),
		samples:    d("heartbeat_samples", "Heartbeats in the recent window."),
		stale:      d("heartbeat_stale", "1 when a heartbeat has been unanswered longer than the stale threshold."),
		position:   d("stream_position", "The master's position (last token seen) per stream.", "stream"),
		rate:       d("stream_rows_per_second", "Rows per second on each stream, over the last minute.", "stream"),
		conns:      d("connections", "Worker connections in the master's connection table (probes left out)."),
		connLag:    d("connection_max_seconds_behind", "Worst lag over their streams of the worker connections of each connection name (names bounded as the replication metrics' are).", "name"),
		connsAvail: d("connections_available", "1 when the master's connection table could be read."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.up, c.latency, c.samples, c.stale, c.position, c.rate, c.conns, c.connLag, c.connsAvail} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collect(ch, c.p.Snapshot())
}

// collect exports one snapshot.
func (c *collector) collect(ch chan<- prometheus.Metric, s Snapshot) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	gauge(c.info, 1, c.p.cfg.Address, c.p.cfg.ServerName)
	gauge(c.up, b2f(s.Reachable))
	hb := s.Heartbeat
	if hb.Samples > 0 {
		gauge(c.latency, hb.P50.Seconds(), "0.5")
		gauge(c.latency, hb.P99.Seconds(), "0.99")
		gauge(c.latency, hb.Max.Seconds(), "1")
	}
	gauge(c.samples, float64(hb.Samples))
	gauge(c.stale, b2f(hb.Stale))
	for _, st := range s.Streams {
		gauge(c.position, float64(st.Token), st.Name)
		gauge(c.rate, st.RowsPerSecond, st.Name)
	}
	gauge(c.connsAvail, b2f(s.ConnectionsAvailable))
	if s.ConnectionsAvailable {
		gauge(c.conns, float64(len(s.Connections)))
		// Names are chosen by clients and ids grow with every reconnect:
		// one series per name, bounded, with the worst lag among the
		// connections sharing it.
		names := make([]string, len(s.Connections))
		for i, conn := range s.Connections {
			names[i] = conn.Name
		}
		labels := replication.MetricNameLabels(names)
		worst := map[string]float64{}
		for _, conn := range s.Connections {
			l := labels[conn.Name]
			if v, ok := worst[l]; !ok || conn.MaxSecondsBehind > v {
				worst[l] = conn.MaxSecondsBehind
			}
		}
		for name, v := range worst {
			gauge(c.connLag, v, name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
