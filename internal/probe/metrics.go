package probe

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports a probe's snapshot as metrics. Every series carries the
// master's address as a constant label, so one registry can hold the probes
// of many masters (the operator keeps one per master).
type collector struct {
	p          *Probe
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

func newCollector(p *Probe) *collector {
	l := prometheus.Labels{"master": p.cfg.Address}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tcprepl_probe_"+name, help, labels, l)
	}
	return &collector{
		p:          p,
		up:         d("up", "1 while the probe holds a live, caught-up connection to the master."),
		latency:    d("heartbeat_latency_seconds", "Heartbeat round trip (INVALIDATE_CACHE relayed on caches) over the recent window; quantile 1 is the max.", "quantile"),
		samples:    d("heartbeat_samples", "Heartbeats in the recent window."),
		stale:      d("heartbeat_stale", "1 when a heartbeat has been unanswered longer than the stale threshold."),
		position:   d("stream_position", "The master's position (last token seen) per stream.", "stream"),
		rate:       d("stream_rows_per_second", "Rows per second on each stream, over the last minute.", "stream"),
		conns:      d("connections", "Worker connections in the master's connection table (probes left out)."),
		connLag:    d("connection_max_seconds_behind", "Worst lag of each worker connection over its streams.", "id", "name"),
		connsAvail: d("connections_available", "1 when the master's connection table could be read."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.latency, c.samples, c.stale, c.position, c.rate, c.conns, c.connLag, c.connsAvail} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
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
		for _, conn := range s.Connections {
			gauge(c.connLag, conn.MaxSecondsBehind, strconv.FormatUint(conn.ID, 10), conn.Name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
