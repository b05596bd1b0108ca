package kubelet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/kubelet"
)

// buildEchoServer compiles testdata/echoserver, the workload of these tests.
func buildEchoServer(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "echoserver")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/echoserver")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build echoserver: %v\n%s", err, b)
	}
	return out
}

// poll calls f every 200ms until it returns nil or timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

func getJSON(url string) (map[string]string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("GET %s: %w: %s", url, err, b)
	}
	return m, nil
}

func echoContainer(name string, args ...string) corev1.Container {
	return corev1.Container{
		Name:    name,
		Image:   "example.com/echoserver:test",
		Command: []string{"echoserver"},
		Args:    args,
		Env: []corev1.EnvVar{
			{Name: "MY_POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "MY_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "MY_POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "MY_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "web-secret"}, Key: "password"}}},
			{Name: "MY_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}, Key: "greeting"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
			PeriodSeconds: 5, FailureThreshold: 1,
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}},
	}
}

var configVolume = corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
	LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"},
}}}

// TestKubeletRunsWorkloads runs a Deployment and a StatefulSet through the
// real controllers and the test kubelet: pods get their own addresses,
// env, files, readiness; a client reaches the Deployment through its
// Service name; a killed process is restarted; deleting the Deployment
// garbage-collects its ReplicaSet and pods and kills their processes.
func TestKubeletRunsWorkloads(t *testing.T) {
	c := cluster.StartForTest(t)
	echo := buildEchoServer(t)
	k := kubelet.RunForTest(t, kubelet.Options{
		RESTConfig: c.RESTConfig,
		Commands:   map[string]string{"echoserver": echo},
	})
	cs, err := kubernetes.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ns := "kubelet-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount admission plugin refuses pods until the
	// controller manager has created the namespace's default account.
	poll(t, time.Minute, "default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web-config"},
		Data:       map[string]string{"greeting": "hello", "config.txt": "listen=:9999\n"},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "web-secret"},
		StringData: map[string]string{"password": "s3cret"},
	}, metav1.CreateOptions{})
	mustCreate(err)

	webLabels := map[string]string{"app": "web"}
	_, err = cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: webLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: webLabels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{echoContainer("web", "--listen=:8080", "--config=/etc/web/config.txt")},
					Volumes:    []corev1.Volume{configVolume},
				},
			},
		},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: webLabels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{})
	mustCreate(err)

	start := time.Now()
	poll(t, 90*time.Second, "Deployment web ready", func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 2 {
			return fmt.Errorf("readyReplicas=%d", d.Status.ReadyReplicas)
		}
		return nil
	})
	t.Logf("Deployment ready in %s", time.Since(start).Round(time.Millisecond))

	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("want 2 web pods, got %d", len(pods.Items))
	}
	seen := map[string]bool{}
	for _, p := range pods.Items {
		ip := p.Status.PodIP
		if !strings.HasPrefix(ip, fmt.Sprintf("127.%d.", k.Subnet())) || seen[ip] {
			t.Fatalf("pod %s: IP %q not a distinct address in 127.%d.0.0/16", p.Name, ip, k.Subnet())
		}
		seen[ip] = true
		if p.Spec.NodeName != "testkubelet" || p.Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s: node %q phase %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		}
		info, err := getJSON("http://" + ip + ":8080/info")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"pod": p.Name, "namespace": ns, "podIP": ip, "secret": "s3cret", "fromCM": "hello",
			"listen": ip + ":8080",
			// File contents follow the listen-address rule too.
			"config": "listen=" + ip + ":9999\n",
		}
		for key, v := range want {
			if info[key] != v {
				t.Errorf("pod %s /info %s = %q, want %q", p.Name, key, info[key], v)
			}
		}
	}

	// A client StatefulSet reaches web through its Service name.
	clientLabels := map[string]string{"app": "client"}
	_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To[int32](1),
			ServiceName: "client",
			Selector:    &metav1.LabelSelector{MatchLabels: clientLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: clientLabels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{echoContainer("client", "--listen=:8080", "--peer=web."+ns+".svc.cluster.local:80")},
					Volumes:    []corev1.Volume{configVolume},
				},
			},
		},
	}, metav1.CreateOptions{})
	mustCreate(err)
	var clientIP string
	poll(t, 60*time.Second, "client-0 ready", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "client-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				clientIP = p.Status.PodIP
				return nil
			}
		}
		return fmt.Errorf("not ready: %+v", p.Status.Conditions)
	})
	webIP, err := k.ServiceAddress(ns, "web")
	if err != nil {
		t.Fatal(err)
	}
	info, err := getJSON("http://" + clientIP + ":8080/info")
	if err != nil {
		t.Fatal(err)
	}
	if info["peer"] != webIP+":80" {
		t.Fatalf("client's --peer = %q, want the web Service's proxy address %s:80", info["peer"], webIP)
	}
	peer, err := getJSON("http://" + clientIP + ":8080/peer")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(peer["pod"], "web-") {
		t.Fatalf("client reached %q through the web Service, want a web pod", peer["pod"])
	}

	// Kill one web process: the kubelet restarts it and counts the restart.
	victim := pods.Items[0]
	pid, ok := k.ContainerPID(ns, victim.Name, "web")
	if !ok {
		t.Fatalf("no running process for %s", victim.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "web pod restarted and ready", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := p.Status.ContainerStatuses
		if len(st) != 1 || st[0].RestartCount != 1 || !st[0].Ready {
			return fmt.Errorf("container status %+v", st)
		}
		if st[0].LastTerminationState.Terminated == nil || st[0].LastTerminationState.Terminated.ExitCode != 128+int32(syscall.SIGKILL) {
			return fmt.Errorf("last state %+v", st[0].LastTerminationState)
		}
		return nil
	})
	if _, err := getJSON("http://" + victim.Status.PodIP + ":8080/info"); err != nil {
		t.Fatalf("restarted pod does not serve on its old address: %v", err)
	}

	// Garbage collection: deleting the Deployment removes ReplicaSet and
	// pods, and the pods' processes die.
	var pids []int
	for _, p := range pods.Items {
		if pid, ok := k.ContainerPID(ns, p.Name, "web"); ok {
			pids = append(pids, pid)
		}
	}
	if err := cs.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	poll(t, 90*time.Second, "web pods and ReplicaSets garbage-collected", func() error {
		rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		ps, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		if len(rs.Items)+len(ps.Items) > 0 {
			return fmt.Errorf("%d ReplicaSets, %d pods left", len(rs.Items), len(ps.Items))
		}
		return nil
	})
	t.Logf("garbage collected in %s", time.Since(start).Round(time.Millisecond))
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d of a deleted pod still runs", pid)
		}
	}
	// With no ready endpoints, the client's calls through the Service fail.
	if _, err := getJSON("http://" + clientIP + ":8080/peer"); err == nil {
		t.Errorf("client still reaches web after its pods are gone")
	}
	_, err = cs.CoreV1().Pods(ns).Get(ctx, "client-0", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		t.Fatalf("client-0 was deleted with the web Deployment")
	}
}
