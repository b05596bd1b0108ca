package specs

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// Keys of a kubernetes.io/tls Secret (cert-manager writes ca.crt too).
const (
	TLSCertKey = corev1.TLSCertKey       // tls.crt
	TLSKeyKey  = corev1.TLSPrivateKeyKey // tls.key
	TLSCAKey   = "ca.crt"
)

// Paths of the TLS volumes. Not under MasterConfigDir: a Secret mounted
// inside a ConfigMap's mount would depend on mount order.
const (
	MasterTLSDir       = "/etc/tcprepl-tls"
	WorkerTLSCADir     = "/etc/tcprepl-tls/ca"
	WorkerTLSClientDir = "/etc/tcprepl-tls/client"
	tlsVolume          = "tls"
	tlsCAVolume        = "tls-ca"
	tlsClientVolume    = "tls-client"
	portNamePlaintext  = "replication-pt"
)

// Environment the reference worker (and `tcprepl probe`) read their TLS
// settings from (cmd/tcprepl/tlsclient.go).
const (
	EnvTLSCAFile     = "TCPREPL_TLS_CA_FILE"
	EnvTLSCertFile   = "TCPREPL_TLS_CERT_FILE"
	EnvTLSKeyFile    = "TCPREPL_TLS_KEY_FILE"
	EnvTLSServerName = "TCPREPL_TLS_SERVER_NAME"
)

// ProbeIdentity is the identity (subject CN) of the probe certificate the
// operator has issued. Access rules always grant it what the probe needs:
// every stream, and INVALIDATE_CACHE for its heartbeats. A probe
// certificate in spec.tls.probeSecretName should carry it too.
const ProbeIdentity = "tcprepl-probe"

// CertificateGVK is cert-manager's Certificate.
var CertificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

// MasterCertificateNames are the cert-manager Certificates (and the
// Secrets they write) of a master with spec.tls.certManager: its own and
// its probe's.
func MasterCertificateNames(m *replv1.ReplicationMaster) []string {
	return []string{m.Name + "-master-tls", m.Name + "-probe-tls"}
}

// WorkerCertificateName is the cert-manager Certificate (and Secret) of a
// worker of a cert-manager master.
func WorkerCertificateName(w *replv1.ReplicationWorker) string { return w.Name + "-worker-tls" }

// MasterTLSSecretName is the Secret holding the master's certificate:
// spec.tls.secretName, or the one its cert-manager Certificate writes.
func MasterTLSSecretName(m *replv1.ReplicationMaster) string {
	if m.Spec.TLS != nil && m.Spec.TLS.SecretName != "" {
		return m.Spec.TLS.SecretName
	}
	return MasterCertificateNames(m)[0]
}

// ProbeTLSSecretName is the Secret holding the operator probe's client
// certificate; "" when there is none (a Secret master without
// spec.tls.probeSecretName).
func ProbeTLSSecretName(m *replv1.ReplicationMaster) string {
	switch t := m.Spec.TLS; {
	case t == nil:
		return ""
	case t.ProbeSecretName != "":
		return t.ProbeSecretName
	case t.CertManager != nil:
		return MasterCertificateNames(m)[1]
	}
	return ""
}

// WorkerClientSecretName is the Secret holding a worker's client
// certificate; "" when it has none.
func WorkerClientSecretName(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) string {
	switch {
	case m.Spec.TLS == nil:
		return ""
	case w.Spec.TLS != nil && w.Spec.TLS.ClientSecretName != "":
		return w.Spec.TLS.ClientSecretName
	case m.Spec.TLS.CertManager != nil:
		return WorkerCertificateName(w)
	}
	return ""
}

// MasterTLSServerName is the name clients check the master's certificate
// for.
func MasterTLSServerName(m *replv1.ReplicationMaster) string {
	if m.Spec.TLS != nil && m.Spec.TLS.ServerName != "" {
		return m.Spec.TLS.ServerName
	}
	return fmt.Sprintf("%s.%s.svc", masterServiceName(m), m.Namespace)
}

// MasterDNSNames are the names the master's certificate carries: its
// Service's and its pod's DNS names, and spec.tls.serverName.
func MasterDNSNames(m *replv1.ReplicationMaster) []string {
	svc, hl, ns := masterServiceName(m), masterHeadlessServiceName(m), m.Namespace
	names := []string{MasterTLSServerName(m)}
	for _, n := range []string{
		svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local",
		hl + "." + ns + ".svc", MasterPodName(m) + "." + hl + "." + ns + ".svc",
		MasterPodName(m) + "." + hl + "." + ns + ".svc.cluster.local",
	} {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// applyMasterTLSConfig sets the TLS and access settings of the master's
// config file. The paths are where BuildMasterStatefulSet mounts the
// Secret. The plaintext listener is not here: it needs the pod IP, which
// only the container's arguments can expand.
func applyMasterTLSConfig(c *masterapi.Config, m *replv1.ReplicationMaster) {
	t := m.Spec.TLS
	if t == nil {
		return
	}
	c.TLS.CertFile = MasterTLSDir + "/" + TLSCertKey
	c.TLS.KeyFile = MasterTLSDir + "/" + TLSKeyKey
	switch t.ClientAuthMode() {
	case replv1.ClientAuthRequire:
		c.TLS.ClientCAFile = MasterTLSDir + "/" + TLSCAKey
		c.TLS.ClientAuth = masterapi.ClientAuthRequire
	case replv1.ClientAuthVerifyIfGiven:
		c.TLS.ClientCAFile = MasterTLSDir + "/" + TLSCAKey
		c.TLS.ClientAuth = masterapi.ClientAuthOptional
	}
	if len(t.AccessRules) == 0 {
		return
	}
	for _, r := range t.AccessRules {
		c.Access.Rules = append(c.Access.Rules, masterapi.AccessRule{
			Identity: r.Identity, Commands: slices.Clone(r.Commands), Streams: slices.Clone(r.Streams),
		})
	}
	// With rules, whatever none grants is refused: the probe must still
	// read every stream and send its INVALIDATE_CACHE heartbeats.
	c.Access.Rules = append(c.Access.Rules, masterapi.AccessRule{
		Identity: ProbeIdentity, Commands: []string{"INVALIDATE_CACHE"}, Streams: []string{"*"},
	})
}

// applyMasterTLSPod mounts the master's certificate, serves the plaintext
// port when asked, and turns the HTTP probes to HTTPS (the HTTP port
// speaks TLS too).
func applyMasterTLSPod(sts *appsv1.StatefulSet, m *replv1.ReplicationMaster) {
	t := m.Spec.TLS
	if t == nil {
		return
	}
	spec := &sts.Spec.Template.Spec
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: tlsVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: MasterTLSSecretName(m),
		Items: []corev1.KeyToPath{
			{Key: TLSCertKey, Path: TLSCertKey}, {Key: TLSKeyKey, Path: TLSKeyKey}, {Key: TLSCAKey, Path: TLSCAKey},
		},
		DefaultMode: ptr.To[int32](0o440),
	}}})
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tlsVolume, MountPath: MasterTLSDir, ReadOnly: true})
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p != nil && p.HTTPGet != nil {
			p.HTTPGet.Scheme = corev1.URISchemeHTTPS
		}
	}
	if port := t.PlaintextReplicationPort; port != nil {
		c.Args = append(c.Args, "--plaintext-replication-listen="+podIPListenAddress(*port))
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: portNamePlaintext, ContainerPort: *port, Protocol: corev1.ProtocolTCP})
	}
}

// tlsServicePorts is the plaintext replication port of the Services, when
// spec.tls.plaintextReplicationPort asks for one.
func tlsServicePorts(m *replv1.ReplicationMaster) []corev1.ServicePort {
	if m.Spec.TLS == nil || m.Spec.TLS.PlaintextReplicationPort == nil {
		return nil
	}
	return []corev1.ServicePort{{
		Name: portNamePlaintext, Port: *m.Spec.TLS.PlaintextReplicationPort,
		TargetPort: intstr.FromString(portNamePlaintext), Protocol: corev1.ProtocolTCP,
	}}
}

// tlsNetworkPolicyPorts opens the plaintext port to the peers of the
// replication port.
func tlsNetworkPolicyPorts(m *replv1.ReplicationMaster) []networkingv1.NetworkPolicyPort {
	if m.Spec.TLS == nil || m.Spec.TLS.PlaintextReplicationPort == nil {
		return nil
	}
	tcp := corev1.ProtocolTCP
	return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(*m.Spec.TLS.PlaintextReplicationPort))}}
}

// applyWorkerTLSPod makes the worker pods dial the master over TLS: the
// master's CA (only ca.crt of its Secret: never its key), the client
// certificate when there is one, and the TCPREPL_TLS_* environment the
// reference worker reads. A custom command gets the same files and
// environment.
func applyWorkerTLSPod(sts *appsv1.StatefulSet, w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) {
	if m.Spec.TLS == nil {
		return
	}
	spec := &sts.Spec.Template.Spec
	c := &spec.Containers[0]
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: tlsCAVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: MasterTLSSecretName(m),
		Items:      []corev1.KeyToPath{{Key: TLSCAKey, Path: TLSCAKey}},
	}}})
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tlsCAVolume, MountPath: WorkerTLSCADir, ReadOnly: true})
	env := []corev1.EnvVar{
		{Name: EnvTLSCAFile, Value: WorkerTLSCADir + "/" + TLSCAKey},
		{Name: EnvTLSServerName, Value: MasterTLSServerName(m)},
	}
	if s := WorkerClientSecretName(w, m); s != "" {
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: tlsClientVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  s,
			Items:       []corev1.KeyToPath{{Key: TLSCertKey, Path: TLSCertKey}, {Key: TLSKeyKey, Path: TLSKeyKey}},
			DefaultMode: ptr.To[int32](0o440),
		}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tlsClientVolume, MountPath: WorkerTLSClientDir, ReadOnly: true})
		env = append(env,
			corev1.EnvVar{Name: EnvTLSCertFile, Value: WorkerTLSClientDir + "/" + TLSCertKey},
			corev1.EnvVar{Name: EnvTLSKeyFile, Value: WorkerTLSClientDir + "/" + TLSKeyKey},
		)
	}
	// Before the user's env (spec.env), which the worker builder appended
	// last: a user's TCPREPL_TLS_* still wins, as env later in the list does.
	at := len(c.Env) - len(w.Spec.Env)
	c.Env = slices.Insert(c.Env, at, env...)
}

// BuildCertificate returns a cert-manager Certificate (as unstructured: the
// operator does not depend on cert-manager's Go types, and works without
// cert-manager installed). commonName is the client identity; dnsNames the
// server names.
func BuildCertificate(name, namespace string, labels map[string]string, issuer replv1.IssuerReference, secretName, commonName string, dnsNames []string, usages ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(CertificateGVK)
	u.SetName(name)
	u.SetNamespace(namespace)
	u.SetLabels(labels)
	kind, group := issuer.Kind, issuer.Group
	if kind == "" {
		kind = "Issuer"
	}
	if group == "" {
		group = CertificateGVK.Group
	}
	spec := map[string]any{
		"secretName": secretName,
		"issuerRef":  map[string]any{"name": issuer.Name, "kind": kind, "group": group},
		"privateKey": map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"usages":     toAnySlice(usages),
		// The operator's cache sees only Secrets with its label.
		"secretTemplate": map[string]any{"labels": map[string]any{LabelManagedBy: ManagedBy}},
	}
	if commonName != "" {
		spec["commonName"] = commonName
	}
	if len(dnsNames) > 0 {
		spec["dnsNames"] = toAnySlice(dnsNames)
	}
	u.Object["spec"] = spec
	return u
}

func toAnySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// BuildMasterCertificates are the Certificates of a cert-manager master:
// its serving certificate and its probe's client certificate. Nil without
// spec.tls.certManager.
func BuildMasterCertificates(m *replv1.ReplicationMaster) []*unstructured.Unstructured {
	t := m.Spec.TLS
	if t == nil || t.CertManager == nil {
		return nil
	}
	issuer := t.CertManager.IssuerRef
	return []*unstructured.Unstructured{
		BuildCertificate(MasterTLSSecretName(m), m.Namespace, MasterLabels(m), issuer, MasterTLSSecretName(m), "", MasterDNSNames(m), "server auth", "digital signature", "key encipherment"),
		BuildCertificate(ProbeTLSSecretName(m), m.Namespace, MasterLabels(m), issuer, ProbeTLSSecretName(m), ProbeIdentity, nil, "client auth", "digital signature", "key encipherment"),
	}
}

// BuildWorkerCertificate is the client Certificate of a worker of a
// cert-manager master that names no client Secret; nil otherwise. Its
// identity is the ReplicationWorker's name.
func BuildWorkerCertificate(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) *unstructured.Unstructured {
	t := m.Spec.TLS
	if t == nil || t.CertManager == nil || (w.Spec.TLS != nil && w.Spec.TLS.ClientSecretName != "") {
		return nil
	}
	name := WorkerClientSecretName(w, m)
	return BuildCertificate(name, w.Namespace, workerLabels(w), t.CertManager.IssuerRef, name, w.Name, nil, "client auth", "digital signature", "key encipherment")
}

// MasterHTTPScheme is "https" when the master has spec.tls (its HTTP port
// speaks TLS too), else "http".
func MasterHTTPScheme(m *replv1.ReplicationMaster) string {
	if m.Spec.TLS != nil {
		return "https"
	}
	return "http"
}
