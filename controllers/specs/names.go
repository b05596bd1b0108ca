// Package specs builds the objects the operator owns (StatefulSets,
// Deployments, Services, ConfigMaps, Secrets, NetworkPolicies) and names
// them. Every builder is a pure function of the resource and the
// operator's options; the package imports no client, so it cannot read or
// write the cluster.
package specs

import (
	"fmt"
	"net"
	"strconv"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// Labels the operator puts on everything it creates. The managed-by label
// also scopes the operator's cache, so only these objects are watched.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelMaster is on every worker pod: the master it replicates from. The
	// master's NetworkPolicy admits pods by it.
	LabelMaster = "tcprepl.io/master"

	AppName         = "tcprepl"
	ManagedBy       = "tcprepl-operator"
	ComponentMaster = "master"
	ComponentWorker = "worker"
)

// Annotations.
const (
	// AnnotationConfigHash on the pod template rolls the pod when a
	// setting the master reads only at start changes (ConfigHash). Live
	// settings are not in it: the master applies them itself.
	AnnotationConfigHash = "tcprepl.io/restart-config-hash"
	// AnnotationSpecHash on owned objects records the desired state last
	// written, so an unchanged object costs no API write.
	AnnotationSpecHash = "tcprepl.io/spec-hash"
	// AnnotationProbeAddress on a ReplicationMaster overrides the host:port
	// the operator's probe dials (for an operator running outside the
	// cluster network).
	AnnotationProbeAddress = "tcprepl.io/probe-address"
	// AnnotationProbeHTTPURL overrides the base URL of the master's HTTP API
	// the probe reads the connection table from.
	AnnotationProbeHTTPURL = "tcprepl.io/probe-http-url"
)

// Paths inside the containers the operator builds.
const (
	MasterConfigDir     = "/etc/tcprepl"
	MasterConfigFile    = "master.yaml"
	MasterDataDir       = "/var/lib/tcprepl"
	WorkerStateDir      = "/var/lib/tcprepl-worker"
	PublishTokenKey     = "token"
	BinaryName          = "tcprepl"
	masterContainer     = "master"
	workerContainer     = "worker"
	portNameReplication = "replication"
	portNameHTTP        = "http"
	portNameMetrics     = "metrics"
)

// Environment variables injected into pods.
const (
	EnvMasterAddress = "TCPREPL_MASTER_ADDRESS"
	EnvServerName    = "TCPREPL_SERVER_NAME"
	EnvWorkerName    = "TCPREPL_WORKER_NAME"
	EnvPublishToken  = "TCPREPL_PUBLISH_TOKEN"
	EnvPodIP         = "POD_IP"
)

// Object names derived from a master's name.
func masterStatefulSetName(m *replv1.ReplicationMaster) string { return m.Name }
func masterServiceName(m *replv1.ReplicationMaster) string     { return m.Name }
func masterHeadlessServiceName(m *replv1.ReplicationMaster) string {
	return m.Name + "-headless"
}
func masterConfigMapName(m *replv1.ReplicationMaster) string     { return m.Name + "-config" }
func MasterTokenSecretName(m *replv1.ReplicationMaster) string   { return m.Name + "-publish-token" }
func masterNetworkPolicyName(m *replv1.ReplicationMaster) string { return m.Name }

// WorkerStatefulSetName is the worker's StatefulSet; its pods are
// NAME-0, NAME-1, ... and their claims state-NAME-0, state-NAME-1, ...
func WorkerStatefulSetName(w *replv1.ReplicationWorker) string { return w.Name }

// MasterPodName is the StatefulSet's only pod.
func MasterPodName(m *replv1.ReplicationMaster) string { return masterStatefulSetName(m) + "-0" }

// MasterEndpoint is the in-cluster address of a master's replication port:
// the Service's DNS name, which follows the pod across restarts.
func MasterEndpoint(m *replv1.ReplicationMaster) string {
	return fmt.Sprintf("%s.%s.svc:%d", masterServiceName(m), m.Namespace, m.Spec.ReplicationPort)
}

// MasterHTTPEndpoint is the in-cluster base URL of a master's HTTP API.
func MasterHTTPEndpoint(m *replv1.ReplicationMaster) string {
	return fmt.Sprintf("%s://%s.%s.svc:%d", MasterHTTPScheme(m), masterServiceName(m), m.Namespace, m.Spec.HTTPPort)
}

func masterSelectorLabels(m *replv1.ReplicationMaster) map[string]string {
	return map[string]string{LabelName: AppName, LabelComponent: ComponentMaster, LabelInstance: m.Name}
}

func MasterLabels(m *replv1.ReplicationMaster) map[string]string {
	l := masterSelectorLabels(m)
	l[LabelManagedBy] = ManagedBy
	return l
}

func WorkerSelectorLabels(w *replv1.ReplicationWorker) map[string]string {
	return map[string]string{LabelName: AppName, LabelComponent: ComponentWorker, LabelInstance: w.Name}
}

func workerLabels(w *replv1.ReplicationWorker) map[string]string {
	l := WorkerSelectorLabels(w)
	l[LabelManagedBy] = ManagedBy
	return l
}

// HostPort joins a host (an IPv4 or IPv6 address) and a port.
func HostPort(host string, port int32) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
