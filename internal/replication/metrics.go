package replication

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names are Synapse's of 2020, so that existing dashboards keep
// working. Counters are shared by every Server and Client registered on the
// same Registerer; the per-connection gauges are computed at scrape time from
// the live connections, as Synapse's LaterGauges were.
const (
	metricCloseReason          = "synapse_replication_tcp_protocol_close_reason"
	metricPendingCommands      = "synapse_replication_tcp_protocol_pending_commands"
	metricTransportSendBuffer  = "synapse_replication_tcp_protocol_transport_send_buffer"
	metricInboundCommands      = "synapse_replication_tcp_protocol_inbound_commands"
	metricOutboundCommands     = "synapse_replication_tcp_protocol_outbound_commands"
	metricInboundRdataCount    = "synapse_replication_tcp_protocol_inbound_rdata_count"
	metricStreamUpdates        = "synapse_replication_tcp_resource_stream_updates"
	metricTotalConnections     = "synapse_replication_tcp_resource_total_connections"
	metricConnectionsPerStream = "synapse_replication_tcp_resource_connections_per_stream"
	metricResourcePrefix       = "synapse_replication_tcp_resource_"
	// metricCatchUpBytes is tcprepl's own: Synapse had no catch-up pages.
	metricCatchUpBytes = "tcprepl_replication_catchup_bytes"
	// metricCatchUpPages counts catch-up pages queued to connections, by
	// whether the connection read the page from the log or shared one
	// another connection had read.
	metricCatchUpPages = "tcprepl_replication_catchup_pages_total"
)

// resourceCounterNames maps each client command with an effect on the master
// to the suffix of its Synapse counter. The server increments the counter
// when such a command is received and parsed, before the Handler sees it.
var resourceCounterNames = map[string]string{
	CmdUserSync:        "user_sync",
	CmdFederationAck:   "federation_ack",
	CmdRemovePusher:    "remove_pusher",
	CmdInvalidateCache: "invalidate_cache",
	CmdUserIP:          "user_ip_cache",
}

// metrics is one Registerer's set of replication metrics. A nil *metrics
// records nothing, so code paths need no checks beyond the nil receiver.
type metrics struct {
	closeReason   *prometheus.CounterVec
	inboundRdata  *prometheus.CounterVec
	streamUpdates *prometheus.CounterVec
	catchUpPages  *prometheus.CounterVec
	resource      map[string]prometheus.Counter // by command name
	live          *liveCollector
}

var (
	metricsMu         sync.Mutex
	metricsByRegistry = map[prometheus.Registerer]*metrics{}
)

// metricsFor returns the metrics registered on reg, registering them on first
// use. A nil reg gives nil (no metrics).
func metricsFor(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	metricsMu.Lock()
	defer metricsMu.Unlock()
	if m, ok := metricsByRegistry[reg]; ok {
		return m, nil
	}
	m := &metrics{resource: map[string]prometheus.Counter{}, live: newLiveCollector()}
	var err error
	if m.closeReason, err = registerCounterVec(reg, metricCloseReason, "Replication connections closed, by reason.", "reason_type"); err != nil {
		return nil, err
	}
	if m.inboundRdata, err = registerCounterVec(reg, metricInboundRdataCount, "RDATA rows received by replication clients, by stream.", "stream_name"); err != nil {
		return nil, err
	}
	if m.streamUpdates, err = registerCounterVec(reg, metricStreamUpdates, "Rows published to replication connections, by stream.", "stream_name"); err != nil {
		return nil, err
	}
	if m.catchUpPages, err = registerCounterVec(reg, metricCatchUpPages, "Catch-up pages queued to replication connections: source=fetched read from the log, source=shared read once by another connection reading the same range.", "source"); err != nil {
		return nil, err
	}
	for _, source := range []string{pageFetched, pageShared} {
		m.catchUpPages.WithLabelValues(source) // exported at 0 from the start
	}
	for cmd, suffix := range resourceCounterNames {
		c := prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricResourcePrefix + suffix,
			Help: fmt.Sprintf("%s commands received by the replication server.", cmd),
		})
		if c, err = registerReusing(reg, c); err != nil {
			return nil, err
		}
		m.resource[cmd] = c
	}
	if err := reg.Register(m.live); err != nil {
		return nil, fmt.Errorf("register replication connection metrics: %w", err)
	}
	metricsByRegistry[reg] = m
	return m, nil
}

func registerCounterVec(reg prometheus.Registerer, name, help, label string) (*prometheus.CounterVec, error) {
	return registerReusing(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label}))
}

// registerReusing registers c, or returns the identical collector already
// registered (by a caller that registered it themselves).
func registerReusing[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, fmt.Errorf("register replication metrics: %w", err)
	}
	return c, nil
}

func (m *metrics) connClosed(reason string) {
	if m != nil {
		m.closeReason.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) published(stream string, rows int) {
	if m != nil {
		m.streamUpdates.WithLabelValues(stream).Add(float64(rows))
	}
}

func (m *metrics) catchUpPage(source string) {
	if m != nil {
		m.catchUpPages.WithLabelValues(source).Inc()
	}
}

func (m *metrics) clientCommand(name string) {
	if m == nil {
		return
	}
	if c, ok := m.resource[name]; ok {
		c.Inc()
	}
}

func (m *metrics) addConn(c *conn) {
	if m != nil {
		m.live.add(c)
	}
}

func (m *metrics) removeConn(c *conn) {
	if m != nil {
		m.live.remove(c)
	}
}

func (m *metrics) addServer(s *Server) {
	if m != nil {
		m.live.mu.Lock()
		m.live.servers[s] = struct{}{}
		m.live.mu.Unlock()
	}
}

func (m *metrics) removeServer(s *Server) {
	if m != nil {
		m.live.mu.Lock()
		delete(m.live.servers, s)
		m.live.mu.Unlock()
	}
}

// liveCollector computes the per-connection gauges at scrape time. Values
// of connections sharing a name are summed, since the label is the name.
type liveCollector struct {
	mu      sync.Mutex
	conns   map[*conn]struct{}
	servers map[*Server]struct{}

	pending, sendBuffer, inbound, outbound, total, perStream, catchUp *prometheus.Desc
}

func newLiveCollector() *liveCollector {
	return &liveCollector{
		conns:      map[*conn]struct{}{},
		servers:    map[*Server]struct{}{},
		pending:    prometheus.NewDesc(metricPendingCommands, "Commands queued for a replication connection and not yet written to its socket.", []string{"name"}, nil),
		sendBuffer: prometheus.NewDesc(metricTransportSendBuffer, "Bytes queued for a replication connection and not yet written to its socket.", []string{"name"}, nil),
		inbound:    prometheus.NewDesc(metricInboundCommands, "Commands received on live replication connections.", []string{"command", "name"}, nil),
		outbound:   prometheus.NewDesc(metricOutboundCommands, "Commands sent on live replication connections.", []string{"command", "name"}, nil),
		total:      prometheus.NewDesc(metricTotalConnections, "Live replication server connections.", nil, nil),
		perStream:  prometheus.NewDesc(metricConnectionsPerStream, "Replication server connections subscribed (or subscribing) to each stream.", []string{"stream_name"}, nil),
		catchUp:    prometheus.NewDesc(metricCatchUpBytes, "Bytes of catch-up pages read from the log and not yet written to their connections, bounded by the server's MaxCatchUpBytes.", nil, nil),
	}
}

func (l *liveCollector) add(c *conn) {
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
}

func (l *liveCollector) remove(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (l *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{l.pending, l.sendBuffer, l.inbound, l.outbound, l.total, l.perStream, l.catchUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (l *liveCollector) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	conns := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	servers := make([]*Server, 0, len(l.servers))
	for s := range l.servers {
		servers = append(servers, s)
	}
	l.mu.Unlock()

	type key struct{ command, name string }
	pending := map[string]int{}
	sendBuffer := map[string]int{}
	inbound := map[key]uint64{}
	outbound := map[key]uint64{}
	stats := make([]connStats, len(conns))
	names := make([]string, len(conns))
	for i, c := range conns {
		stats[i] = c.stats()
		names[i] = stats[i].name
	}
	// Names are chosen by clients: bound the series they can create.
	labels := MetricNameLabels(names)
	for _, st := range stats {
		name := labels[st.name]
		pending[name] += st.pendingCommands
		sendBuffer[name] += st.pendingBytes
		for cmd, n := range st.commandsIn {
			inbound[key{cmd, name}] += n
		}
		for cmd, n := range st.commandsOut {
			outbound[key{cmd, name}] += n
		}
	}
	for name, v := range pending {
		ch <- prometheus.MustNewConstMetric(l.pending, prometheus.GaugeValue, float64(v), name)
	}
	for name, v := range sendBuffer {
		ch <- prometheus.MustNewConstMetric(l.sendBuffer, prometheus.GaugeValue, float64(v), name)
	}
	for k, v := range inbound {
		ch <- prometheus.MustNewConstMetric(l.inbound, prometheus.GaugeValue, float64(v), k.command, k.name)
	}
	for k, v := range outbound {
		ch <- prometheus.MustNewConstMetric(l.outbound, prometheus.GaugeValue, float64(v), k.command, k.name)
	}

	total := 0
	perStream := map[string]int{}
	var catchUp int64
	for _, s := range servers {
		used, _ := s.catchUp.inUse()
		catchUp += used
		for _, info := range s.Connections() {
			total++
			for _, sub := range info.Subscriptions {
				perStream[sub.Stream]++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(l.total, prometheus.GaugeValue, float64(total))
	ch <- prometheus.MustNewConstMetric(l.catchUp, prometheus.GaugeValue, float64(catchUp))
	for stream, v := range perStream {
		ch <- prometheus.MustNewConstMetric(l.perStream, prometheus.GaugeValue, float64(v), stream)
	}
}

// Bounds of the name label (issue 11): NAME is chosen by an unauthenticated
// client, and 2,500 connections with distinct 12 KB names made /metrics
// 21.7 MB. Connections sharing a name share its series.
const (
	// MaxMetricNames is how many distinct names get series of their own;
	// the connections of all other names are summed under OtherMetricName.
	MaxMetricNames = 100
	// MaxMetricNameLength truncates a name label.
	MaxMetricNameLength = 64
	// OtherMetricName labels the connections past MaxMetricNames names.
	OtherMetricName = "_other"
)

// MetricNameLabels maps connection names to bounded name labels: each name
// sanitised (characters outside [A-Za-z0-9._:@/-] become '_', then
// truncated to MaxMetricNameLength bytes); the MaxMetricNames smallest
// sanitised names keep their own label, the rest map to OtherMetricName.
// The mapping depends only on the set of names, so it is stable between
// scrapes while the connections are.
func MetricNameLabels(names []string) map[string]string {
	out := make(map[string]string, len(names))
	distinct := map[string]bool{}
	for _, n := range names {
		if _, done := out[n]; done {
			continue
		}
		l := sanitizeMetricName(n)
		out[n] = l
		distinct[l] = true
	}
	if len(distinct) <= MaxMetricNames {
		return out
	}
	sorted := make([]string, 0, len(distinct))
	for l := range distinct {
		sorted = append(sorted, l)
	}
	sort.Strings(sorted)
	kept := make(map[string]bool, MaxMetricNames)
	for _, l := range sorted[:MaxMetricNames] {
		kept[l] = true
	}
	for n, l := range out {
		if !kept[l] {
			out[n] = OtherMetricName
		}
	}
	return out
}

func sanitizeMetricName(name string) string {
	if len(name) > MaxMetricNameLength {
		name = name[:MaxMetricNameLength]
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '/', c == '-':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}
