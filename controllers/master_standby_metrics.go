package controllers

import (
	"github.com/prometheus/client_golang/prometheus"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// Standby masters (spec.replicas above 1, on PostgreSQL). The chart's
// TcpreplMasterNoStandby alert compares the two: a master that should have
// standbys and has none ready fails over to nothing.
var (
	masterReadyStandbys = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_ready_standbys",
		Help: "Master pods running and waiting to take over, the active one excluded.",
	}, []string{"namespace", "master"})
	masterDesiredReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcprepl_operator_master_desired_replicas",
		Help: "spec.replicas of the ReplicationMaster: the active master and its standbys.",
	}, []string{"namespace", "master"})
)

func recordStandbyMetrics(m *replv1.ReplicationMaster, st replv1.ReplicationMasterStatus) {
	masterReadyStandbys.WithLabelValues(m.Namespace, m.Name).Set(float64(st.ReadyStandbys))
	masterDesiredReplicas.WithLabelValues(m.Namespace, m.Name).Set(float64(specs.MasterReplicas(m)))
}
