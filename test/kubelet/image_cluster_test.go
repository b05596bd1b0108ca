package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/tcprepl/tcprepl/test/cluster"
)

// TestKubeletRunsPodsFromImages runs pods through the API in image mode:
// one runs from the image as the securityContext says and writes its
// claim through fsGroup; one names an image the kubelet does not have; one
// would run as root despite runAsNonRoot. Each ends as on a real node.
func TestKubeletRunsPodsFromImages(t *testing.T) {
	requireRoot(t)
	c := cluster.StartForTest(t)
	s := testImage(t)
	var layout string
	for _, img := range s.byRef {
		layout = img.layout
	}
	k := RunForTest(t, Options{RESTConfig: c.RESTConfig, ImageLayouts: []string{layout}})
	cs, err := kubernetes.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := "image-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, f func() error) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		var err error
		for time.Now().Before(deadline) {
			if err = f(); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
	waitFor("default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": "hello"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name, image string, psc *corev1.PodSecurityContext) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				RestartPolicy:   corev1.RestartPolicyNever,
				SecurityContext: psc,
				Containers: []corev1.Container{{
					Name: "check", Image: image, Args: []string{"from-args"},
					SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true)},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "data", MountPath: "/data"}, {Name: "tmp", MountPath: "/tmp"},
						{Name: "config", MountPath: "/config", ReadOnly: true},
					},
				}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-" + name}}},
					{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				},
			},
		}
	}
	restricted := &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), FSGroup: ptr.To[int64](65532)}
	for _, p := range []*corev1.Pod{
		pod("runs", "example.com/check:v1", restricted),
		pod("not-pulled", "example.com/check:v2", restricted),
		pod("as-root", "example.com/check:v1", &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](0)}),
	} {
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	waitFor("pod runs to succeed", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "runs", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s: %+v", p.Status.Phase, p.Status.ContainerStatuses)
		}
		return nil
	})
	logs, err := os.ReadFile(k.LogPath(ns, "runs", "check"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(logs)), "\n")
	var out map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("container log %q: %v", logs, err)
	}
	args := fmt.Sprint(out["args"])
	if out["uid"].(float64) != 65532 || out["gid"].(float64) != 65532 || args != "[/usr/local/bin/check from-args]" ||
		out["home"] != "/home/nonroot" || out["path"] != "/usr/local/bin:/bin" {
		t.Errorf("the container ran as %v:%v with %s, HOME %v, PATH %v; want the image's user, entrypoint, home and PATH", out["uid"], out["gid"], args, out["home"], out["path"])
	}
	for key, want := range map[string]string{"write:/data": "", "write:/tmp": "", "write:/": "read-only file system", "read:/config/greeting": "hello"} {
		got, _ := out[key].(string)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if hosts, _ := out["read:/etc/hosts"].(string); !strings.Contains(hosts, "\truns\n") {
		t.Errorf("/etc/hosts does not name the pod: %q", hosts)
	}

	for name, reasons := range map[string][]string{
		"not-pulled": {"ErrImagePull", "ImagePullBackOff"},
		"as-root":    {"CreateContainerConfigError"},
	} {
		waitFor("pod "+name+" waiting with "+strings.Join(reasons, " or "), func() error {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.State.Waiting != nil {
					for _, r := range reasons {
						if st.State.Waiting.Reason == r {
							return nil
						}
					}
				}
			}
			return fmt.Errorf("statuses %+v", p.Status.ContainerStatuses)
		})
	}
}
