package specs

import (
	"maps"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// WorkerMetricsPort is where the reference worker serves /metrics,
// /healthz and /readyz.
const WorkerMetricsPort = 8080

// DefaultSink is the reference worker's sink when the spec names none.
const DefaultSink = "stdout"

func workerImage(w *replv1.ReplicationWorker, o BuildOptions) string {
	if w.Spec.Image != "" {
		return w.Spec.Image
	}
	return o.DefaultImage
}

// WorkerPodLabels are the pod's labels: the selector labels plus the
// master's name, which the master's NetworkPolicy admits by.
func WorkerPodLabels(w *replv1.ReplicationWorker) map[string]string {
	l := workerLabels(w)
	l[LabelMaster] = w.Spec.MasterRef.Name
	return l
}

// DefaultWorkerStateSize is each worker pod's claim when spec.state.size is
// unset: positions take a few KiB; a file sink in the state dir takes what
// it writes.
var DefaultWorkerStateSize = resource.MustParse("1Gi")

// workerStateVolume is the volume (and claim template) of the state dir.
const workerStateVolume = "state"

// WorkerLogChangePolicy is what the reference worker does when the master's
// log changes: spec.onLogChange, else Resync for an ephemeral master (its
// log is new after every restart, and stopping would stop every worker
// each time) and Stop for a durable one (a new log there is an accident a
// person should look at).
func WorkerLogChangePolicy(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) replv1.LogChangePolicy {
	if w.Spec.OnLogChange != "" {
		return w.Spec.OnLogChange
	}
	if m.Spec.Storage.Ephemeral {
		return replv1.LogChangeResync
	}
	return replv1.LogChangeStop
}

// BuildWorkerStatefulSet returns the StatefulSet of the worker pods. A
// StatefulSet rather than a Deployment because each pod needs its own
// positions back after it is deleted: pod N keeps its name (the worker name
// the master knows it by) and its claim. The master is passed in because
// its address and server name go into the pods' environment.
func BuildWorkerStatefulSet(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster, o BuildOptions) *appsv1.StatefulSet {
	env := []corev1.EnvVar{
		{Name: EnvMasterAddress, Value: MasterEndpoint(m)},
		{Name: EnvServerName, Value: m.Spec.ServerName},
		// The pod name is unique and stable for the pod's life, and the
		// operator matches connections to pods by it (the worker sends it
		// with NAME).
		{Name: EnvWorkerName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: EnvPodIP, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}},
	}
	env = append(env, w.Spec.Env...)

	container := corev1.Container{
		Name:                     workerContainer,
		Image:                    workerImage(w, o),
		ImagePullPolicy:          w.Spec.ImagePullPolicy,
		Env:                      env,
		Resources:                w.Spec.Resources,
		SecurityContext:          restrictedContainerSecurity(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		VolumeMounts: []corev1.VolumeMount{
			{Name: workerStateVolume, MountPath: WorkerStateDir},
			{Name: "tmp", MountPath: "/tmp"},
		},
	}
	if len(w.Spec.Command) > 0 {
		container.Command = w.Spec.Command
		container.Args = w.Spec.Args
	} else {
		streams := w.Spec.Streams
		if len(streams) == 0 {
			streams = []string{"ALL"}
		}
		sink := w.Spec.Sink
		if sink == "" {
			sink = DefaultSink
		}
		container.Command = []string{BinaryName}
		container.Args = append([]string{
			"worker",
			"--streams=" + strings.Join(streams, ","),
			"--sink=" + sink,
			"--state-dir=" + WorkerStateDir,
			"--on-log-change=" + strings.ToLower(string(WorkerLogChangePolicy(w, m))),
			// On the pod IP, like the master, so that pods sharing a
			// network namespace in a test cluster do not collide.
			"--metrics-listen=" + podIPListenAddress(WorkerMetricsPort),
		}, w.Spec.Args...)
		container.Ports = []corev1.ContainerPort{{Name: portNameMetrics, ContainerPort: WorkerMetricsPort, Protocol: corev1.ProtocolTCP}}
		container.LivenessProbe = httpProbeOn("/healthz", portNameMetrics, 10, 3)
		container.ReadinessProbe = httpProbeOn("/readyz", portNameMetrics, 5, 2)
	}

	volumes := []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	var claims []corev1.PersistentVolumeClaim
	if w.Spec.State.Ephemeral {
		// Positions survive container restarts but not pod deletion; a
		// new pod starts from the master's current position.
		volumes = append(volumes, corev1.Volume{Name: workerStateVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	} else {
		size := DefaultWorkerStateSize
		if w.Spec.State.Size != nil {
			size = *w.Spec.State.Size
		}
		claims = append(claims, corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: workerStateVolume, Labels: maps.Clone(workerLabels(w))},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: w.Spec.State.StorageClassName,
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
			},
		})
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
	applyPodOverrides(&tmpl, w.Spec.PodTemplate, WorkerPodLabels(w), nil)

	replicas := ptr.To[int32](1)
	if w.Spec.Replicas != nil {
		replicas = ptr.To(*w.Spec.Replicas)
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: WorkerStatefulSetName(w), Namespace: w.Namespace, Labels: maps.Clone(workerLabels(w))},
		Spec: appsv1.StatefulSetSpec{
			Replicas:             replicas,
			Selector:             &metav1.LabelSelector{MatchLabels: WorkerSelectorLabels(w)},
			Template:             tmpl,
			VolumeClaimTemplates: claims,
			// Workers are independent of each other: start and stop them
			// all at once, as a Deployment would.
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				// A file sink may live next to the positions: deleting a
				// worker by mistake must not delete what it wrote. A pod
				// scaled away and back resumes where it stopped.
				WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
		},
	}
	applyWorkerTLSPod(sts, w, m)
	return sts
}
