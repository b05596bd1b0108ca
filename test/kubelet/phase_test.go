package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A container that exited and will run again leaves the pod Running, as a
// kubelet reports it: a Failed phase made the StatefulSet controller delete
// and recreate a worker pod whose process was only killed.
func TestPhaseOfAnExitedContainer(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		policy corev1.RestartPolicy
		code   int32
		want   corev1.PodPhase
	}{
		"Always, killed":       {policy: corev1.RestartPolicyAlways, code: 137, want: corev1.PodRunning},
		"Always, exited 0":     {policy: corev1.RestartPolicyAlways, code: 0, want: corev1.PodRunning},
		"OnFailure, failed":    {policy: corev1.RestartPolicyOnFailure, code: 1, want: corev1.PodRunning},
		"OnFailure, succeeded": {policy: corev1.RestartPolicyOnFailure, code: 0, want: corev1.PodSucceeded},
		"Never, failed":        {policy: corev1.RestartPolicyNever, code: 3, want: corev1.PodFailed},
		"Never, succeeded":     {policy: corev1.RestartPolicyNever, code: 0, want: corev1.PodSucceeded},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := &podWorker{
				k:           &Kubelet{hostIP: "127.0.0.1"},
				pod:         &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tc.policy}},
				initDone:    true,
				transitions: map[corev1.PodConditionType]metav1.Time{},
				cs: []*container{{
					spec:  corev1.Container{Name: "c"},
					state: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: tc.code}},
				}},
			}
			if got := w.status().Phase; got != tc.want {
				t.Errorf("phase %s, want %s", got, tc.want)
			}
		})
	}
}
