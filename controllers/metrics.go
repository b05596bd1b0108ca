package controllers

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// The operator's own metrics, on its /metrics endpoint. They are set on
// every reconcile (which the probes trigger whenever what they see
// changes), so they are fresher than the rate-limited status, and they are
// what alerts should use: the names and labels are part of the chart's
// PrometheusRule contract. They are named tcprepl_operator_*: the master
// and worker processes export their own tcprepl_master_* and
// tcprepl_worker_* series (internal/master, internal/worker) from other
// scrape jobs with other labels, and one name must mean one thing.
var (
	masterReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_ready",
		Help: "1 when the master's pod is ready and the operator's probe is caught up with it.",
	}, []string{"namespace", "master"})
	masterHeartbeatStale = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_heartbeat_stale",
		Help: "1 when a heartbeat sent through the master has not come back in time.",
	}, []string{"namespace", "master"})
	masterHeartbeatSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_heartbeat_seconds",
		Help: "Latest heartbeat round trip through the master.",
	}, []string{"namespace", "master"})
	masterConnectedWorkers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_connected_workers",
		Help: "Client connections the master holds, the operator's probe excluded.",
	}, []string{"namespace", "master"})
	masterStreamPosition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_stream_position",
		Help: "The master's current token per stream, as the probe last saw it.",
	}, []string{"namespace", "master", "stream"})

	workerDesiredReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_desired_replicas",
		Help: "spec.replicas of the ReplicationWorker.",
	}, []string{"namespace", "worker", "master"})
	workerReadyReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_ready_replicas",
		Help: "Ready worker pods.",
	}, []string{"namespace", "worker", "master"})
	workerConnectedReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_connected_replicas",
		Help: "Worker pods with a connection in the master's connection table.",
	}, []string{"namespace", "worker", "master"})
	workerMaxLagSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_max_lag_seconds",
		Help: "Worst seconds-behind over every stream of every pod of the ReplicationWorker.",
	}, []string{"namespace", "worker", "master"})
	workerLagging = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_lagging",
		Help: "1 when the Lagging condition is True (a stream is more than spec.maxLagSeconds behind).",
	}, []string{"namespace", "worker", "master"})

	// Per pod and stream: what the status's capped pod list cannot show.
	// One series per pod and stream of the master (no connection ids),
	// removed as soon as the pod is gone or terminating, or the worker.
	workerPodLagSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_pod_lag_seconds",
		Help: "Seconds each worker pod is behind on each stream: the older of the master's view of its connection and the pod's own durable position.",
	}, []string{"namespace", "worker", "pod", "stream"})
	workerPodLagTokens = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_worker_pod_lag_tokens",
		Help: "Tokens each worker pod is behind on each stream (the master's position minus the lesser of what it sent and what the pod durably processed).",
	}, []string{"namespace", "worker", "pod", "stream"})

	// podLagSeries remembers the pod series each worker has, so that a
	// gone pod's are deleted without touching the others'.
	podLagMu     sync.Mutex
	podLagSeries = map[types.NamespacedName]map[podStreamKey]podLagGauges{}

	registerOnce sync.Once
	registerErr  error
)

// RegisterMetrics adds the operator's metrics to controller-runtime's
// registry, once.
func RegisterMetrics() error {
	registerOnce.Do(func() {
		for _, c := range []prometheus.Collector{
			masterReady, masterHeartbeatStale, masterHeartbeatSeconds, masterConnectedWorkers, masterStreamPosition,
			masterReadyStandbys, masterDesiredReplicas,
			workerDesiredReplicas, workerReadyReplicas, workerConnectedReplicas, workerMaxLagSeconds, workerLagging,
			workerPodLagSeconds, workerPodLagTokens,
		} {
			if err := ctrlmetrics.Registry.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					registerErr = err
					return
				}
			}
		}
	})
	return registerErr
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func conditionTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}

// recordMasterMetrics publishes a master's freshly computed status.
func recordMasterMetrics(m *replv1.ReplicationMaster, st replv1.ReplicationMasterStatus) {
	l := []string{m.Namespace, m.Name}
	masterReady.WithLabelValues(l...).Set(b2f(conditionTrue(st.Conditions, replv1.ConditionReady)))
	masterConnectedWorkers.WithLabelValues(l...).Set(float64(st.ConnectedWorkers))
	if hb := st.Heartbeat; hb != nil {
		masterHeartbeatStale.WithLabelValues(l...).Set(b2f(hb.Stale))
		if d, err := time.ParseDuration(hb.Last); err == nil {
			masterHeartbeatSeconds.WithLabelValues(l...).Set(d.Seconds())
		}
	}
	for _, s := range st.Streams {
		masterStreamPosition.WithLabelValues(m.Namespace, m.Name, s.Name).Set(float64(s.Token))
	}
	recordStandbyMetrics(m, st)
}

func forgetMasterMetrics(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "master": name}
	for _, v := range []*prometheus.GaugeVec{masterReady, masterHeartbeatStale, masterHeartbeatSeconds, masterConnectedWorkers, masterStreamPosition, masterReadyStandbys, masterDesiredReplicas} {
		v.DeletePartialMatch(l)
	}
}

// recordWorkerMetrics publishes a worker's freshly computed status.
func recordWorkerMetrics(w *replv1.ReplicationWorker, st replv1.ReplicationWorkerStatus) {
	// A masterRef change leaves the old series behind; drop them first.
	forgetWorkerResourceMetrics(w.Namespace, w.Name)
	l := []string{w.Namespace, w.Name, w.Spec.MasterRef.Name}
	desired := int32(1)
	if w.Spec.Replicas != nil {
		desired = *w.Spec.Replicas
	}
	workerDesiredReplicas.WithLabelValues(l...).Set(float64(desired))
	workerReadyReplicas.WithLabelValues(l...).Set(float64(st.ReadyReplicas))
	workerConnectedReplicas.WithLabelValues(l...).Set(float64(st.ConnectedReplicas))
	workerLagging.WithLabelValues(l...).Set(b2f(conditionTrue(st.Conditions, replv1.ConditionLagging)))
	if d, err := time.ParseDuration(st.MaxLag); err == nil {
		workerMaxLagSeconds.WithLabelValues(l...).Set(d.Seconds())
	}
}

// forgetWorkerMetrics drops every series of a worker that is gone.
func forgetWorkerMetrics(namespace, name string) {
	forgetWorkerResourceMetrics(namespace, name)
	recordWorkerPodLags(namespace, name, nil)
}

// forgetWorkerResourceMetrics drops the worker's per-resource series.
func forgetWorkerResourceMetrics(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "worker": name}
	for _, v := range []*prometheus.GaugeVec{workerDesiredReplicas, workerReadyReplicas, workerConnectedReplicas, workerMaxLagSeconds, workerLagging} {
		v.DeletePartialMatch(l)
	}
}

// podStreamLag is one stream's lag of one pod.
type podStreamLag struct {
	stream  string
	seconds float64
	tokens  int64
}

// podLag is one pod's lag on every stream it is known for.
type podLag struct {
	pod     string
	streams []podStreamLag
}

type podStreamKey struct{ pod, stream string }

// podLagGauges are one pod and stream's series, kept so that a reconcile
// of a large worker sets them without looking them up again.
type podLagGauges struct{ seconds, tokens prometheus.Gauge }

// recordWorkerPodLags publishes each pod's lag per stream and deletes the
// series of pods and streams no longer in lags: a pod that is gone (scaled
// down, terminating, or with no known lag) leaves no series behind. The
// others are overwritten in place, so a scrape never sees a pod vanish
// between two reconciles.
func recordWorkerPodLags(namespace, worker string, lags []podLag) {
	key := types.NamespacedName{Namespace: namespace, Name: worker}
	podLagMu.Lock()
	defer podLagMu.Unlock()
	before := podLagSeries[key]
	now := make(map[podStreamKey]podLagGauges, len(before))
	for _, p := range lags {
		for _, s := range p.streams {
			k := podStreamKey{p.pod, s.stream}
			g, ok := before[k]
			if !ok {
				g = podLagGauges{
					seconds: workerPodLagSeconds.WithLabelValues(namespace, worker, p.pod, s.stream),
					tokens:  workerPodLagTokens.WithLabelValues(namespace, worker, p.pod, s.stream),
				}
			}
			g.seconds.Set(s.seconds)
			g.tokens.Set(float64(s.tokens))
			now[k] = g
		}
	}
	for k := range before {
		if _, ok := now[k]; !ok {
			workerPodLagSeconds.DeleteLabelValues(namespace, worker, k.pod, k.stream)
			workerPodLagTokens.DeleteLabelValues(namespace, worker, k.pod, k.stream)
		}
	}
	if len(now) == 0 {
		delete(podLagSeries, key)
		return
	}
	podLagSeries[key] = now
}
