package controllers

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

func TestProbeTargetFor(t *testing.T) {
	t.Parallel()
	withIP := &corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.7"}}
	tests := map[string]struct {
		annotations map[string]string
		pod         *corev1.Pod
		want        ProbeTarget
	}{
		"service until the pod has an IP": {
			pod:  &corev1.Pod{},
			want: ProbeTarget{Address: "m1.ns.svc:9092", HTTPURL: "http://m1.ns.svc:9093", ServerName: "matrix.example.org", Namespace: "ns", Name: "m1"},
		},
		"pod IP": {
			pod:  withIP,
			want: ProbeTarget{Address: "10.0.0.7:9092", HTTPURL: "http://10.0.0.7:9093", ServerName: "matrix.example.org", Namespace: "ns", Name: "m1"},
		},
		"IPv6 pod IP": {
			pod:  &corev1.Pod{Status: corev1.PodStatus{PodIP: "fd00::7"}},
			want: ProbeTarget{Address: "[fd00::7]:9092", HTTPURL: "http://[fd00::7]:9093", ServerName: "matrix.example.org", Namespace: "ns", Name: "m1"},
		},
		"annotations win": {
			annotations: map[string]string{specs.AnnotationProbeAddress: "127.0.0.1:1", specs.AnnotationProbeHTTPURL: "http://127.0.0.1:2"},
			pod:         withIP,
			want:        ProbeTarget{Address: "127.0.0.1:1", HTTPURL: "http://127.0.0.1:2", ServerName: "matrix.example.org", Namespace: "ns", Name: "m1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newMaster(func(m *replv1.ReplicationMaster) { m.Annotations = tc.annotations })
			if diff := cmp.Diff(tc.want, ProbeTargetFor(m, tc.pod)); diff != "" {
				t.Errorf("probe target (-want +got):\n%s", diff)
			}
		})
	}
}
