package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers"
	"github.com/tcprepl/tcprepl/internal/testenv"
)

func TestOperatorCommandErrors(t *testing.T) {
	tests := map[string]struct {
		args []string
		want string
	}{
		"bad pod labels":      {[]string{"--operator-pod-labels", "a=b=c"}, "--operator-pod-labels"},
		"status interval":     {[]string{"--status-interval", "100ms"}, "--status-interval must be at least 1s"},
		"no concurrency":      {[]string{"--max-concurrent-reconciles", "0"}, "--max-concurrent-reconciles must be at least 1"},
		"image policy":        {[]string{"--operand-image-policy", "always"}, "--operand-image-policy: operand image policy \"always\""},
		"no such kubeconfig":  {[]string{"--kubeconfig", filepath.Join(t.TempDir(), "none")}, "find the cluster"},
		"positional argument": {[]string{"extra"}, "unknown command"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := newOperatorCommand()
			cmd.SetArgs(append(tc.args, "--metrics-bind-address=0", "--health-probe-bind-address=0"))
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDefaultImage(t *testing.T) {
	t.Setenv("TCPREPL_IMAGE", "")
	if got := defaultImage(); !strings.HasPrefix(got, "ghcr.io/tcprepl/tcprepl:") {
		t.Errorf("default image = %s", got)
	}
	t.Setenv("TCPREPL_IMAGE", "registry.local/tcprepl:1")
	if got := defaultImage(); got != "registry.local/tcprepl:1" {
		t.Errorf("image from env = %s", got)
	}
}

// TestOperatorProcessWithShippedRBAC runs `tcprepl operator` as a process
// against a real kube-apiserver, authenticated as the operator's service
// account and authorized only by config/rbac (the generated ClusterRole and
// the leader election Role), with leader election on. It proves the RBAC the
// chart ships is enough, and that --kubeconfig, --watch-namespace and the
// health endpoint work.
func TestOperatorProcessWithShippedRBAC(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		testenv.SkipOrFail(t, "KUBEBUILDER_ASSETS is not set: run `make tools` and test through the Makefile to run this against a real kube-apiserver")
	}
	bin := buildBinary(t)
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop envtest: %v", err)
		}
	})
	ctx := context.Background()
	admin, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"tcprepl-system", "apps"} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"role.yaml", "role_binding.yaml", "leader_election_role.yaml", "leader_election_role_binding.yaml"} {
		applyYAMLFile(t, admin, filepath.Join("..", "..", "config", "rbac", f))
	}
	// A client certificate whose name is the service account's user name
	// is matched by the ServiceAccount subjects of the bindings.
	user, err := env.AddUser(envtest.User{Name: "system:serviceaccount:tcprepl-system:tcprepl-operator"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	// Port 0: the kernel picks free ports; the test finds them afterwards.
	cmd := exec.Command(bin, "operator", "--kubeconfig="+kcPath, "--watch-namespace=apps",
		"--leader-elect", "--leader-election-namespace=tcprepl-system",
		"--metrics-bind-address=127.0.0.1:0", "--health-probe-bind-address=127.0.0.1:0",
		"--image=registry.local/tcprepl:test", "--operator-namespace=tcprepl-system")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				t.Logf("operator killed: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("operator output:\n%s", logs.String())
		}
	})

	m := &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: "m", Namespace: "apps"},
		Spec:       replv1.ReplicationMasterSpec{ServerName: "example.org", Storage: replv1.StorageSpec{Ephemeral: true}},
	}
	w := &replv1.ReplicationWorker{
		ObjectMeta: metav1.ObjectMeta{Name: "w", Namespace: "apps"},
		Spec:       replv1.ReplicationWorkerSpec{MasterRef: replv1.MasterReference{Name: "m"}, Replicas: ptr.To[int32](2)},
	}
	if err := admin.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	healthPort, metricsPort := operatorPorts(t, cmd.Process.Pid)
	pollErr(t, 60*time.Second, "owned objects and status", func() error {
		var sts appsv1.StatefulSet
		if err := admin.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "m"}, &sts); err != nil {
			return err
		}
		if img := sts.Spec.Template.Spec.Containers[0].Image; img != "registry.local/tcprepl:test" {
			return fmt.Errorf("master image = %s", img)
		}
		var d appsv1.StatefulSet
		if err := admin.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "w"}, &d); err != nil {
			return err
		}
		var live replv1.ReplicationMaster
		if err := admin.Get(ctx, client.ObjectKeyFromObject(m), &live); err != nil {
			return err
		}
		if meta.FindStatusCondition(live.Status.Conditions, replv1.ConditionReady) == nil || live.Status.PublishTokenSecret == "" {
			return fmt.Errorf("master status = %+v", live.Status)
		}
		var lw replv1.ReplicationWorker
		if err := admin.Get(ctx, client.ObjectKeyFromObject(w), &lw); err != nil {
			return err
		}
		if lw.Status.ObservedGeneration != lw.Generation {
			return fmt.Errorf("worker status = %+v", lw.Status)
		}
		return nil
	})
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthPort))
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz = %d", resp.StatusCode)
	}
	// /metrics carries the per-resource series and the probe's own.
	pollErr(t, 30*time.Second, "metrics", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		for _, want := range []string{
			`tcprepl_operator_master_ready{master="m",namespace="apps"} 0`,
			`tcprepl_operator_worker_desired_replicas{master="m",namespace="apps",worker="w"} 2`,
			`tcprepl_probe_up{master="m",namespace="apps"} 0`,
			`tcprepl_probe_info{address="m.apps.svc:9092",master="m",namespace="apps",server_name=`,
		} {
			if !strings.Contains(string(body), want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the operator hit RBAC denials:\n%s", logs.String())
	}
	// A stale cache right after a create is retried quietly, not reported.
	if strings.Contains(logs.String(), "reconcile failed") {
		t.Errorf("a reconcile failed:\n%s", logs.String())
	}

	// SIGTERM: a clean exit that releases the leader lease.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("operator exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("operator did not stop on SIGTERM")
	}
}

// syncBuffer is a bytes.Buffer the process's output copier writes while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func applyYAMLFile(t *testing.T, c client.Client, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return
			}
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(context.Background(), u); err != nil {
			t.Fatalf("%s: create %s %s: %v", path, u.GetKind(), u.GetName(), err)
		}
	}
}

// operatorPorts finds the health and metrics ports of an operator started
// with both bound to 127.0.0.1:0: the process's listening TCP sockets
// (from /proc), told apart by which one serves /healthz.
func operatorPorts(t *testing.T, pid int) (health, metrics int) {
	t.Helper()
	pollErr(t, 60*time.Second, "the operator's health and metrics listeners", func() error {
		ports, err := listeningPorts(pid)
		if err != nil {
			return err
		}
		if len(ports) != 2 {
			return fmt.Errorf("the operator listens on ports %v, want two (health and metrics)", ports)
		}
		health, metrics = 0, 0
		for _, p := range ports {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				health = p
			} else {
				metrics = p
			}
		}
		if health == 0 || metrics == 0 {
			return fmt.Errorf("ports %v: cannot tell the health port from the metrics port", ports)
		}
		return nil
	})
	return health, metrics
}

// listeningPorts lists the TCP ports a process listens on, from the
// socket inodes among its file descriptors and the kernel's socket tables.
func listeningPorts(pid int) ([]int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("list the operator's file descriptors: %w", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue // no IPv6
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			port, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				return nil, fmt.Errorf("parse %s line %q: %w", table, line, err)
			}
			ports = append(ports, int(port))
		}
	}
	slices.Sort(ports)
	return ports, nil
}

func pollErr(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}
