package master

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Roles a master reports on /readyz ("role"). With the PostgreSQL log
// several masters of one server run at once: the one holding the log is
// active, the others are standbys waiting to take it over.
const (
	RoleActive  = "active"
	RoleStandby = "standby"
)

// activeName is the gauge both a serving master and a standby export, so
// that one series says which pod is active.
const activeName = "tcprepl_master_active"

const activeHelp = "1 while this master serves the stream log (active), 0 while it is a standby or has lost the log."

// activeGauge reports 1 while the master serves with a healthy log.
func activeGauge(m *Master) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: activeName, Help: activeHelp}, func() float64 {
		if m.serving.Load() && !m.closing.Load() && m.logFailure() == nil {
			return 1
		}
		return 0
	})
}

// NewStandbyRegistry is the registry a standby serves on /metrics: the
// process and Go runtime metrics and tcprepl_master_active at 0.
func NewStandbyRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: activeName, Help: activeHelp}, func() float64 { return 0 }),
	)
	return r
}
