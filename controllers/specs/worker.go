package specs

import (
	"maps"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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

// BuildWorkerDeployment returns the Deployment of the worker pods. The
// master is passed in because its address and server name go into the
// pods' environment.
func BuildWorkerDeployment(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster, o BuildOptions) *appsv1.Deployment {
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
			{Name: "state", MountPath: WorkerStateDir},
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
			// On the pod IP, like the master, so that pods sharing a
			// network namespace in a test cluster do not collide.
			"--metrics-listen=" + podIPListenAddress(WorkerMetricsPort),
		}, w.Spec.Args...)
		container.Ports = []corev1.ContainerPort{{Name: portNameMetrics, ContainerPort: WorkerMetricsPort, Protocol: corev1.ProtocolTCP}}
		container.LivenessProbe = httpProbeOn("/healthz", portNameMetrics, 10, 3)
		container.ReadinessProbe = httpProbeOn("/readyz", portNameMetrics, 5, 2)
	}

	tmpl := corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{container},
			Volumes: []corev1.Volume{
				// Positions survive container restarts (the common failure)
				// but not pod deletion; a new pod starts from NOW unless
				// the worker is told otherwise.
				{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
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
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace, Labels: maps.Clone(workerLabels(w))},
		Spec: appsv1.DeploymentSpec{
			Replicas: replicas,
			Selector: &metav1.LabelSelector{MatchLabels: WorkerSelectorLabels(w)},
			Template: tmpl,
		},
	}
}
