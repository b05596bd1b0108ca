package kubelet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/kubelet"
)

// TestKubeletRefreshesVolumes: a running pod's ConfigMap and Secret files
// follow their objects, as with a real kubelet, without restarting its
// container; the address rules apply to the new content; a deleted
// ConfigMap leaves the last files in place until it is back.
func TestKubeletRefreshesVolumes(t *testing.T) {
	c := cluster.StartForTest(t)
	echo := buildEchoServer(t)
	k := kubelet.RunForTest(t, kubelet.Options{
		RESTConfig:   c.RESTConfig,
		Commands:     map[string]string{"echoserver": echo},
		VolumeResync: 500 * time.Millisecond,
	})
	cs, err := kubernetes.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "refresh"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Minute, "default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "live"},
		Data:       map[string]string{"config.txt": "listen=:7001\nv=1\n", "gone": "soon"},
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "live"}, Data: map[string][]byte{"password": []byte("one")}}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "reader", Image: "example.com/echoserver:test", Command: []string{"echoserver"},
				Args: []string{"--listen=:8080", "--config=/etc/live/config.txt"},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: "/etc/live"}, {Name: "secret", MountPath: "/etc/secret"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "live"}}}},
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "live"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ip string
	poll(t, time.Minute, "reader running", func() error {
		p, err := podIn(ctx, cs, ns, "reader")
		if err != nil {
			return err
		}
		if !kubeletPodReady(p) {
			return fmt.Errorf("not ready: %s", p.Status.Phase)
		}
		ip = p.Status.PodIP
		return nil
	})
	pid, ok := k.ContainerPID(ns, "reader", "reader")
	if !ok {
		t.Fatal("no process for the reader pod")
	}
	volDir := func(vol string) string { return filepath.Join(k.Dir(), "pods", ns+"_reader", "volumes", vol) }
	// config reports what the running process reads at its config path.
	config := func(want string) func() error {
		return func() error {
			info, err := getJSON("http://" + ip + ":8080/info")
			if err != nil {
				return err
			}
			if info["config"] != want || info["configError"] != "" {
				return fmt.Errorf("config = %q (%s), want %q", info["config"], info["configError"], want)
			}
			return nil
		}
	}
	fileIs := func(p, want string) func() error {
		return func() error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if string(b) != want {
				return fmt.Errorf("%s = %q, want %q", p, b, want)
			}
			return nil
		}
	}
	poll(t, 10*time.Second, "first version", config("listen="+ip+":7001\nv=1\n"))

	// A changed ConfigMap: new content (addresses rewritten as at start), a
	// removed key gone.
	cm.Data = map[string]string{"config.txt": "listen=:7002\nv=2\n"}
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the ConfigMap's update in the running pod", config("listen="+ip+":7002\nv=2\n"))
	if _, err := os.Lstat(filepath.Join(volDir("config"), "gone")); !os.IsNotExist(err) {
		t.Errorf("key removed from the ConfigMap still in the volume: %v", err)
	}
	secret.Data = map[string][]byte{"password": []byte("two")}
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the Secret's update in the running pod", fileIs(filepath.Join(volDir("secret"), "password"), "two"))

	// A deleted ConfigMap keeps the last files; once back, it is followed.
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "live", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // four resyncs
	if err := config("listen=" + ip + ":7002\nv=2\n")(); err != nil {
		t.Fatalf("after the ConfigMap was deleted: %v", err)
	}
	cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "live"}, Data: map[string]string{"config.txt": "v=3\n"}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the re-created ConfigMap in the running pod", config("v=3\n"))

	// All of it without a restart.
	if got, ok := k.ContainerPID(ns, "reader", "reader"); !ok || got != pid {
		t.Errorf("reader process %d (running %v), want the first one, %d", got, ok, pid)
	}
	p, err := podIn(ctx, cs, ns, "reader")
	if err != nil {
		t.Fatal(err)
	}
	if n := p.Status.ContainerStatuses[0].RestartCount; n != 0 {
		t.Errorf("reader restarted %d times, want 0", n)
	}
}
