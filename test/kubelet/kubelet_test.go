package kubelet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
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

func podIn(ctx context.Context, cs kubernetes.Interface, ns, name string) (*corev1.Pod, error) {
	return cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

func waitingReason(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
		return ""
	}
	return p.Status.ContainerStatuses[0].State.Waiting.Reason
}

// TestKubeletFailurePaths covers what goes wrong in pods: missing config,
// a program that is not there, crashing containers under each restart
// policy, init containers, failing liveness and readiness probes, and a
// Service name that does not resolve yet.
func TestKubeletFailurePaths(t *testing.T) {
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
	ns := "failures"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Minute, "default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	create := func(p *corev1.Pod) {
		t.Helper()
		p.Namespace = ns
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(name string, policy corev1.RestartPolicy, cs ...corev1.Container) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}},
			Spec: corev1.PodSpec{RestartPolicy: policy, Containers: cs}}
	}
	sh := func(name, script string) corev1.Container {
		return corev1.Container{Name: name, Image: "busybox", Command: []string{"sh", "-c", script}}
	}

	// Missing ConfigMap: the container waits, and starts once it exists.
	web := echoContainer("web", "--listen=:8080", "--config=/etc/web/config.txt")
	missing := pod("missing-config", corev1.RestartPolicyAlways, web)
	missing.Spec.Volumes = []corev1.Volume{configVolume}
	create(missing)
	// A program neither in the command table nor in PATH.
	create(pod("no-program", corev1.RestartPolicyAlways, corev1.Container{Name: "c", Image: "x", Command: []string{"no-such-program-xyz"}}))
	// Crashes under each restart policy; an init container runs first.
	create(pod("never", corev1.RestartPolicyNever, sh("c", "exit 3")))
	onFailure := pod("on-failure", corev1.RestartPolicyOnFailure, sh("c", `test -f "$HOME/ran" && exit 0; touch "$HOME/ran"; exit 1`))
	onFailure.Spec.InitContainers = []corev1.Container{sh("init", `echo init > "$HOME/init-ran"`)}
	create(onFailure)
	// A liveness probe that always fails gets the container restarted.
	live := echoContainer("web", "--listen=:8080")
	live.VolumeMounts = nil
	live.Env = nil
	live.ReadinessProbe = nil
	live.LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/no-such-path", Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1, FailureThreshold: 2,
	}
	create(pod("liveness", corev1.RestartPolicyAlways, live))
	// A peer named by a Service that does not exist yet.
	client := echoContainer("client", "--listen=:8080", "--peer=later."+ns+".svc.cluster.local:80")
	client.VolumeMounts = nil
	client.Env = nil
	client.ReadinessProbe = nil
	create(pod("waits-for-service", corev1.RestartPolicyAlways, client))

	poll(t, time.Minute, "config error and missing program reported", func() error {
		for name, want := range map[string]string{"missing-config": "CreateContainerConfigError", "no-program": "CreateContainerConfigError", "waits-for-service": "ServiceNotResolvable"} {
			p, err := podIn(ctx, cs, ns, name)
			if err != nil {
				return err
			}
			if got := waitingReason(p); got != want || p.Status.Phase != corev1.PodPending {
				return fmt.Errorf("pod %s: phase %s waiting %q, want Pending %q", name, p.Status.Phase, got, want)
			}
		}
		return nil
	})
	poll(t, time.Minute, "restartPolicy Never: Failed with exit code 3", func() error {
		p, err := podIn(ctx, cs, ns, "never")
		if err != nil {
			return err
		}
		st := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodFailed || len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 3 || st[0].RestartCount != 0 {
			return fmt.Errorf("phase %s statuses %+v", p.Status.Phase, st)
		}
		return nil
	})
	poll(t, time.Minute, "restartPolicy OnFailure: init, one failure, then Succeeded", func() error {
		p, err := podIn(ctx, cs, ns, "on-failure")
		if err != nil {
			return err
		}
		st := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodSucceeded || len(st) != 1 || st[0].RestartCount != 1 {
			return fmt.Errorf("phase %s statuses %+v", p.Status.Phase, st)
		}
		if len(p.Status.InitContainerStatuses) != 1 || p.Status.InitContainerStatuses[0].State.Terminated == nil {
			return fmt.Errorf("init container status %+v", p.Status.InitContainerStatuses)
		}
		return nil
	})
	poll(t, time.Minute, "liveness failures restart the container", func() error {
		p, err := podIn(ctx, cs, ns, "liveness")
		if err != nil {
			return err
		}
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].RestartCount < 1 {
			return fmt.Errorf("statuses %+v", st)
		}
		return nil
	})

	// The missing pieces appear: the waiting containers start.
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config"}, Data: map[string]string{"greeting": "hi", "config.txt": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-secret"}, StringData: map[string]string{"password": "p"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "later"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"pod": "missing-config"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var webIP string
	poll(t, time.Minute, "missing-config pod ready once its ConfigMap and Secret exist", func() error {
		p, err := podIn(ctx, cs, ns, "missing-config")
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || !kubeletPodReady(p) {
			return fmt.Errorf("phase %s ready %v waiting %q", p.Status.Phase, kubeletPodReady(p), waitingReason(p))
		}
		webIP = p.Status.PodIP
		return nil
	})
	poll(t, time.Minute, "waits-for-service started once the Service exists and reaches it", func() error {
		p, err := podIn(ctx, cs, ns, "waits-for-service")
		if err != nil {
			return err
		}
		if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s waiting %q", p.Status.Phase, waitingReason(p))
		}
		peer, err := getJSON("http://" + p.Status.PodIP + ":8080/peer")
		if err != nil {
			return err
		}
		if peer["pod"] != "missing-config" {
			return fmt.Errorf("reached %q through Service later", peer["pod"])
		}
		return nil
	})

	// Readiness follows the probe: the echoserver fails /readyz while
	// $HOME/not-ready exists (HOME is the pod's directory).
	notReady := filepath.Join(k.Dir(), "pods", ns+"_missing-config", "not-ready")
	if err := os.WriteFile(notReady, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "pod not ready while its readiness probe fails", func() error {
		p, err := podIn(ctx, cs, ns, "missing-config")
		if err != nil {
			return err
		}
		if kubeletPodReady(p) {
			return fmt.Errorf("still ready")
		}
		return nil
	})
	// No ready endpoint: a new connection through the Service is refused.
	svcIP, err := k.ServiceIP(ns, "later")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := getJSON("http://" + svcIP + ":80/info"); err == nil {
		t.Errorf("the Service still forwards to a pod that is not ready")
	}
	if err := os.Remove(notReady); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "pod ready again", func() error {
		p, err := podIn(ctx, cs, ns, "missing-config")
		if err != nil {
			return err
		}
		if !kubeletPodReady(p) {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	if info, err := getJSON("http://" + svcIP + ":80/info"); err != nil || info["podIP"] != webIP {
		t.Errorf("through the Service: %v %v, want the pod at %s", info, err, webIP)
	}
}

func kubeletPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
