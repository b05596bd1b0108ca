package worker

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's own series; the replication client adds the
// Synapse-named protocol metrics to the same registry.
type metrics struct {
	position     *prometheus.GaugeVec
	rowsReceived *prometheus.CounterVec
	batches      *prometheus.CounterVec
	duplicates   prometheus.Counter
	sinkErrors   prometheus.Counter
	stateErrors  prometheus.Counter
	caughtUp     prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcprepl_worker_position",
			Help: "The durable position (last token delivered to the sink) per stream.",
		}, []string{"stream"}),
		rowsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcprepl_worker_rows_received_total",
			Help: "Rows received from the master per stream (rows sent again after a reconnect included).",
		}, []string{"stream"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcprepl_worker_batches_delivered_total",
			Help: "Batches (tokens) the sink accepted per stream.",
		}, []string{"stream"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcprepl_worker_duplicate_batches_skipped_total",
			Help: "Batches received again after a reconnect and not given to the sink a second time.",
		}),
		sinkErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcprepl_worker_sink_errors_total",
			Help: "Failed attempts to deliver a batch to the sink (each is retried).",
		}),
		stateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcprepl_worker_state_save_errors_total",
			Help: "Failed attempts to save positions in the state dir.",
		}),
		caughtUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tcprepl_worker_caught_up",
			Help: "1 while the worker is connected and every stream has caught up.",
		}),
	}
}

// register adds the metrics to reg (nothing when reg is nil).
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.position, m.rowsReceived, m.batches, m.duplicates, m.sinkErrors, m.stateErrors, m.caughtUp} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("worker: metrics already registered: run one worker per registry: %w", err)
			}
			return fmt.Errorf("worker: register metrics: %w", err)
		}
	}
	return nil
}
