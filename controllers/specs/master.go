package specs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// BuildOptions are the operator-wide settings the builders need.
type BuildOptions struct {
	// DefaultImage runs masters and workers whose spec names no image.
	DefaultImage string
	// OperatorNamespace is where the operator's pods run; NetworkPolicies
	// admit the operator from there. Empty admits operator pods from any
	// namespace (they are still matched by OperatorPodLabels).
	OperatorNamespace string
	// OperatorPodLabels select the operator's pods in NetworkPolicies.
	OperatorPodLabels map[string]string
}

// RenderMasterConfig returns the master's YAML configuration file. Listen
// addresses are not in it: they need the pod IP, which only the container's
// arguments can expand.
func RenderMasterConfig(m *replv1.ReplicationMaster) (string, error) {
	c := masterapi.Config{
		ServerName: m.Spec.ServerName,
		DataDir:    MasterDataDir,
		Federation: m.Spec.Streams.Federation,
		Limits: masterapi.Limits{
			MaxLineLength:      int(m.Spec.Limits.MaxLineLength),
			MaxPendingCommands: int(m.Spec.Limits.MaxPendingCommands),
		},
	}
	if OnPostgres(m) {
		// The URI comes from the Secret through the environment, never
		// through this ConfigMap.
		c.DataDir = ""
		c.Log.Backend = masterapi.LogPostgres
	}
	if d := m.Spec.KeepAlive.PingInterval; d != nil && d.Duration > 0 {
		c.Limits.PingInterval.Duration = d.Duration
	}
	if d := m.Spec.KeepAlive.PingTimeout; d != nil && d.Duration > 0 {
		c.Limits.PingTimeout.Duration = d.Duration
	}
	for _, s := range m.Spec.Streams.Custom {
		c.CustomStreams = append(c.CustomStreams, masterapi.CustomStream{Name: s.Name, Fields: int(ptr.Deref(s.Fields, 0))})
	}
	r := m.Spec.Retention
	if def, ok := retentionOf(r.MaxRows, r.MaxAge); ok {
		c.Retention = map[string]masterapi.Retention{"*": def}
	}
	for _, s := range r.Streams {
		if sr, ok := retentionOf(s.MaxRows, s.MaxAge); ok {
			if c.Retention == nil {
				c.Retention = map[string]masterapi.Retention{}
			}
			c.Retention[s.Name] = sr
		}
	}
	applyMasterTLSConfig(&c, m)
	out, err := yaml.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("render master config for %s/%s: %w", m.Namespace, m.Name, err)
	}
	return string(out), nil
}

func retentionOf(rows *int64, age *metav1.Duration) (masterapi.Retention, bool) {
	var r masterapi.Retention
	if rows != nil {
		r.MaxRows = *rows
	}
	if age != nil && age.Duration > 0 {
		r.MaxAge.Duration = age.Duration
	}
	return r, r.MaxRows > 0 || r.MaxAge.Duration != 0
}

// BuildMasterConfigMap returns the ConfigMap holding the master's config.
func BuildMasterConfigMap(m *replv1.ReplicationMaster) (*corev1.ConfigMap, error) {
	cfg, err := RenderMasterConfig(m)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: masterConfigMapName(m), Namespace: m.Namespace, Labels: MasterLabels(m)},
		Data:       map[string]string{MasterConfigFile: cfg},
	}, nil
}

// BuildMasterTokenSecret returns the Secret holding the publish token. The
// token is generated once by the caller and then kept: rotating it would
// lock out every producer.
func BuildMasterTokenSecret(m *replv1.ReplicationMaster, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: MasterTokenSecretName(m), Namespace: m.Namespace, Labels: MasterLabels(m)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{PublishTokenKey: []byte(token)},
	}
}

// ConfigHash digests everything that the running master reads only at
// start: the restart settings of the rendered config (masterapi.ClassOf)
// and the token. A change to any of it rolls the pod; a change to a live
// setting (retention, keep-alive, limits) only updates the ConfigMap, which
// the running master re-reads and applies without dropping a connection.
// A config that does not parse is hashed whole: rolling is the safe side.
// startOnly are further values the master reads only at start (the
// PostgreSQL URI from its Secret), each hashed after the token.
func ConfigHash(config, token string, startOnly ...string) string {
	digest := []byte(config)
	var c masterapi.Config
	if err := yaml.UnmarshalStrict([]byte(config), &c); err == nil {
		if b, err := json.Marshal(masterapi.RestartSettings(c)); err == nil {
			digest = b
		}
	}
	h := sha256.New()
	h.Write(digest)
	h.Write([]byte{0})
	h.Write([]byte(token))
	for _, v := range startOnly {
		h.Write([]byte{0})
		h.Write([]byte(v))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func masterImage(m *replv1.ReplicationMaster, o BuildOptions) string {
	if m.Spec.Image != "" {
		return m.Spec.Image
	}
	return o.DefaultImage
}

// restrictedPodSecurity is the Pod Security "restricted" profile: the
// binary needs no privileges and writes only to its volumes.
func restrictedPodSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](65532),
		RunAsGroup:     ptr.To[int64](65532),
		FSGroup:        ptr.To[int64](65532),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func restrictedContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Privileged:               ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// applyPodOverrides merges the user's overrides into a pod template. The
// operator's labels and annotations are applied after, so they win.
func applyPodOverrides(t *corev1.PodTemplateSpec, o *replv1.PodTemplateOverrides, labels, annotations map[string]string) {
	t.Labels = map[string]string{}
	t.Annotations = map[string]string{}
	if o != nil {
		maps.Copy(t.Labels, o.Labels)
		maps.Copy(t.Annotations, o.Annotations)
		t.Spec.NodeSelector = o.NodeSelector
		t.Spec.Tolerations = o.Tolerations
		t.Spec.Affinity = o.Affinity
		t.Spec.PriorityClassName = o.PriorityClassName
		t.Spec.ServiceAccountName = o.ServiceAccountName
		t.Spec.ImagePullSecrets = o.ImagePullSecrets
	}
	maps.Copy(t.Labels, labels)
	maps.Copy(t.Annotations, annotations)
	if len(t.Annotations) == 0 {
		t.Annotations = nil
	}
}

// BuildMasterStatefulSet returns the StatefulSet of one master pod.
// configHash comes from ConfigHash over the rendered config and the token.
func BuildMasterStatefulSet(m *replv1.ReplicationMaster, o BuildOptions, configHash string) *appsv1.StatefulSet {
	container := corev1.Container{
		Name:            masterContainer,
		Image:           masterImage(m, o),
		ImagePullPolicy: m.Spec.ImagePullPolicy,
		Command:         []string{BinaryName},
		Args: []string{
			"master",
			"--config=" + MasterConfigDir + "/" + MasterConfigFile,
			"--server-name=" + m.Spec.ServerName,
			// Listening on the pod IP rather than every interface keeps two
			// masters that share a network namespace (a test cluster of
			// local processes) from colliding on the same port.
			"--replication-listen=" + podIPListenAddress(m.Spec.ReplicationPort),
			"--http-listen=" + podIPListenAddress(m.Spec.HTTPPort),
		},
		Env: []corev1.EnvVar{
			{Name: EnvPodIP, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}},
			{Name: EnvPublishToken, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: MasterTokenSecretName(m)},
				Key:                  PublishTokenKey,
			}}},
		},
		Ports: []corev1.ContainerPort{
			{Name: portNameReplication, ContainerPort: m.Spec.ReplicationPort, Protocol: corev1.ProtocolTCP},
			{Name: portNameHTTP, ContainerPort: m.Spec.HTTPPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: m.Spec.Resources,
		// Opening a large log can take a while; the startup probe holds the
		// liveness probe off until the process answers once.
		StartupProbe:   httpProbe("/healthz", 2, 60),
		LivenessProbe:  httpProbe("/healthz", 10, 3),
		ReadinessProbe: httpProbe("/readyz", 5, 2),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: MasterConfigDir, ReadOnly: true},
			{Name: "tmp", MountPath: "/tmp"},
		},
		SecurityContext:          restrictedContainerSecurity(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: masterConfigMapName(m)},
		}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	var claims []corev1.PersistentVolumeClaim
	onPostgres := OnPostgres(m)
	if onPostgres {
		container.Env = append(container.Env, postgresEnv(m)...)
		container.ReadinessProbe = standbyReadinessProbe()
	} else {
		// In the order these had before PostgreSQL storage existed: a
		// reordered template would roll every existing master pod.
		container.Args = append(container.Args, "--data-dir="+MasterDataDir)
		container.VolumeMounts = slices.Insert(container.VolumeMounts, 1, corev1.VolumeMount{Name: "data", MountPath: MasterDataDir})
	}
	switch {
	case onPostgres:
		// The log is in PostgreSQL: no volume, so nothing ties a master pod
		// to a node.
	case m.Spec.Storage.Ephemeral:
		volumes = append(volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	default:
		pvc := corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: MasterLabels(m)},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: m.Spec.Storage.StorageClassName,
			},
		}
		if m.Spec.Storage.Size != nil {
			pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: *m.Spec.Storage.Size}
		}
		claims = append(claims, pvc)
	}

	tmpl := corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{container},
			Volumes:                       volumes,
			SecurityContext:               restrictedPodSecurity(),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](30),
		},
	}
	applyPodOverrides(&tmpl, m.Spec.PodTemplate, MasterLabels(m), map[string]string{AnnotationConfigHash: configHash})

	podManagement, update := appsv1.OrderedReadyPodManagement, appsv1.RollingUpdateStatefulSetStrategyType
	if onPostgres {
		// Standbys are never ready (they answer /readyz with 503 until
		// they hold the log), and the StatefulSet controller waits for a
		// pod to be ready before it creates the next one or updates the
		// next one. So pods start in parallel, and the operator rolls them
		// itself, standbys first (controllers/master_rollout.go).
		podManagement, update = appsv1.ParallelPodManagement, appsv1.OnDeleteStatefulSetStrategyType
	}

	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: masterStatefulSetName(m), Namespace: m.Namespace, Labels: MasterLabels(m)},
		Spec: appsv1.StatefulSetSpec{
			// One writer per resource: a Pebble master is one pod; on
			// PostgreSQL the log's lock leaves one pod active and the
			// others standing by.
			Replicas:             ptr.To(MasterReplicas(m)),
			Selector:             &metav1.LabelSelector{MatchLabels: masterSelectorLabels(m)},
			ServiceName:          masterHeadlessServiceName(m),
			Template:             tmpl,
			VolumeClaimTemplates: claims,
			PodManagementPolicy:  podManagement,
			UpdateStrategy:       appsv1.StatefulSetUpdateStrategy{Type: update},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				// The log outlives the resource: deleting a master by
				// mistake must not delete its data.
				WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
		},
	}
	applyMasterTLSPod(sts, m)
	return sts
}

// podIPListenAddress is a listen address on the pod's own IP, which the
// kubelet expands from the POD_IP variable (status.podIP). The IP is in
// brackets so that an IPv6 pod IP gives a valid host:port ("[fd00::1]:9092",
// not "fd00::1:9092"); Go's net.Listen accepts brackets around an IPv4
// address too ("[10.0.0.1]:9092").
func podIPListenAddress(port int32) string {
	return fmt.Sprintf("[$(%s)]:%d", EnvPodIP, port)
}

func httpProbe(path string, period, failures int32) *corev1.Probe {
	return httpProbeOn(path, portNameHTTP, period, failures)
}

func httpProbeOn(path, port string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(port), Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    period,
		TimeoutSeconds:   2,
		FailureThreshold: failures,
		SuccessThreshold: 1,
	}
}

func masterServicePorts(m *replv1.ReplicationMaster) []corev1.ServicePort {
	return append([]corev1.ServicePort{
		{Name: portNameReplication, Port: m.Spec.ReplicationPort, TargetPort: intstr.FromString(portNameReplication), Protocol: corev1.ProtocolTCP},
		{Name: portNameHTTP, Port: m.Spec.HTTPPort, TargetPort: intstr.FromString(portNameHTTP), Protocol: corev1.ProtocolTCP},
	}, tlsServicePorts(m)...)
}

// BuildMasterService returns the Service workers and producers use.
func BuildMasterService(m *replv1.ReplicationMaster) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: masterServiceName(m), Namespace: m.Namespace, Labels: MasterLabels(m)},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: masterSelectorLabels(m),
			Ports:    masterServicePorts(m),
		},
	}
}

// BuildMasterHeadlessService returns the StatefulSet's governing Service,
// which gives the pod a stable DNS name even before it is ready.
func BuildMasterHeadlessService(m *replv1.ReplicationMaster) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: masterHeadlessServiceName(m), Namespace: m.Namespace, Labels: MasterLabels(m)},
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeClusterIP,
			ClusterIP:                corev1.ClusterIPNone,
			Selector:                 masterSelectorLabels(m),
			Ports:                    masterServicePorts(m),
			PublishNotReadyAddresses: true,
		},
	}
}

// operatorPeer selects the operator's pods, which probe every master.
func operatorPeer(o BuildOptions) networkingv1.NetworkPolicyPeer {
	peer := networkingv1.NetworkPolicyPeer{
		PodSelector:       &metav1.LabelSelector{MatchLabels: maps.Clone(o.OperatorPodLabels)},
		NamespaceSelector: &metav1.LabelSelector{},
	}
	if o.OperatorNamespace != "" {
		peer.NamespaceSelector.MatchLabels = map[string]string{"kubernetes.io/metadata.name": o.OperatorNamespace}
	}
	return peer
}

// BuildMasterNetworkPolicy admits the replication port from this master's
// worker pods, the operator and spec.networkPolicy.replicationFrom, and the
// HTTP port from the operator and spec.networkPolicy.httpFrom. Everything
// else is denied.
func BuildMasterNetworkPolicy(m *replv1.ReplicationMaster, o BuildOptions) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	workers := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
		LabelName: AppName, LabelComponent: ComponentWorker, LabelMaster: m.Name,
	}}}
	replFrom := append([]networkingv1.NetworkPolicyPeer{workers, operatorPeer(o)}, m.Spec.NetworkPolicy.ReplicationFrom...)
	httpFrom := append([]networkingv1.NetworkPolicyPeer{operatorPeer(o)}, m.Spec.NetworkPolicy.HTTPFrom...)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: masterNetworkPolicyName(m), Namespace: m.Namespace, Labels: MasterLabels(m)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: masterSelectorLabels(m)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{
					Ports: append([]networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(m.Spec.ReplicationPort))}}, tlsNetworkPolicyPorts(m)...),
					From:  replFrom,
				},
				{
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(m.Spec.HTTPPort))}},
					From:  httpFrom,
				},
			},
		},
	}
}
