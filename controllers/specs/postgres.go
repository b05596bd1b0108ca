package specs

import (
	corev1 "k8s.io/api/core/v1"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// CloudNativePG publishes a Cluster's application credentials in the Secret
// "<cluster>-app"; its "uri" key is a complete connection URI to the
// read-write Service.
const (
	cnpgAppSecretSuffix = "-app"
	cnpgURIKey          = "uri"
)

// OnPostgres reports whether the master keeps its log in PostgreSQL.
func OnPostgres(m *replv1.ReplicationMaster) bool { return m.Spec.Storage.Postgres != nil }

// PostgresURIRef is the Secret and key that hold the master's PostgreSQL
// URI; ok is false for a master that is not on PostgreSQL.
func PostgresURIRef(m *replv1.ReplicationMaster) (ref replv1.SecretKeyRef, ok bool) {
	p := m.Spec.Storage.Postgres
	switch {
	case p == nil:
		return ref, false
	case p.URISecretRef != nil:
		return *p.URISecretRef, true
	default:
		return replv1.SecretKeyRef{Name: p.Cluster + cnpgAppSecretSuffix, Key: cnpgURIKey}, true
	}
}

// MasterReplicas is spec.replicas, 1 when unset.
func MasterReplicas(m *replv1.ReplicationMaster) int32 {
	if m.Spec.Replicas == nil || *m.Spec.Replicas < 1 {
		return 1
	}
	return *m.Spec.Replicas
}

// postgresEnv hands the URI to the master through the environment variable
// it reads when no DSN file is configured. A missing Secret or key keeps
// the container from starting (the kubelet retries), and the operator
// reports it as a condition.
func postgresEnv(m *replv1.ReplicationMaster) []corev1.EnvVar {
	ref, ok := PostgresURIRef(m)
	if !ok {
		return nil
	}
	return []corev1.EnvVar{{Name: masterapi.PostgresDSNEnv, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name},
		Key:                  ref.Key,
	}}}}
}

// standbyReadinessProbe probes /readyz every second: only the active master
// answers 200, so the pod's readiness is what moves the Service to a new
// active master, and a short period is most of the failover time. Two
// failures of one second each take a frozen active master out of the
// Service within about three seconds.
func standbyReadinessProbe() *corev1.Probe {
	p := httpProbe("/readyz", 1, 2)
	p.TimeoutSeconds = 1
	return p
}
