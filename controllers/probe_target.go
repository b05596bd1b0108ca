package controllers

import (
	corev1 "k8s.io/api/core/v1"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// ProbeTarget is where a probe connects.
type ProbeTarget struct {
	// Address is the replication host:port.
	Address string
	// ServerName is what the master must announce.
	ServerName string
	// HTTPURL is the base URL of the master's HTTP API.
	HTTPURL string
	// Namespace and Name are the ReplicationMaster's: the probe's metrics
	// are labelled by them, not by the address, which moves with the pod.
	Namespace, Name string
	// TLS is how the probe speaks TLS to a master with spec.tls (tls.go);
	// zero for plaintext.
	TLS ProbeTLS
}

// ProbeTargetFor is where the operator's probe reaches a master: the
// annotations when set (an operator outside the cluster network), else the
// pod's IP (the probe watches this pod, not whatever the Service balances
// to), else the Service's DNS name until the pod has an IP.
func ProbeTargetFor(m *replv1.ReplicationMaster, pod *corev1.Pod) ProbeTarget {
	t := ProbeTarget{ServerName: m.Spec.ServerName, Address: specs.MasterEndpoint(m), HTTPURL: specs.MasterHTTPEndpoint(m),
		Namespace: m.Namespace, Name: m.Name}
	if pod != nil && pod.Status.PodIP != "" && pod.DeletionTimestamp == nil {
		host := pod.Status.PodIP
		t.Address = specs.HostPort(host, m.Spec.ReplicationPort)
		t.HTTPURL = specs.MasterHTTPScheme(m) + "://" + specs.HostPort(host, m.Spec.HTTPPort)
	}
	if a := m.Annotations[specs.AnnotationProbeAddress]; a != "" {
		t.Address = a
	}
	if u := m.Annotations[specs.AnnotationProbeHTTPURL]; u != "" {
		t.HTTPURL = u
	}
	return t
}
