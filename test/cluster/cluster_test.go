package cluster_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/tcprepl/tcprepl/test/cluster"
)

// pidsOf lists the processes whose command line contains dir: every
// component of a cluster is started with paths in its own directory.
func pidsOf(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		var pid int
		for _, c := range e.Name() {
			pid = pid*10 + int(c-'0')
		}
		pids = append(pids, pid)
	}
	return pids
}

func TestClusterStartStop(t *testing.T) {
	c := cluster.StartForTest(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("load written kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The controller manager's service-account controller creates the
	// default ServiceAccount of a new namespace: proof that it runs and can
	// write through its own kubeconfig.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-test"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := cs.CoreV1().ServiceAccounts("cluster-test").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("default ServiceAccount never appeared: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := cs.CoreV1().ConfigMaps("cluster-test").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
		// Published asynchronously too; give it the same minute.
		deadline := time.Now().Add(30 * time.Second)
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			_, err = cs.CoreV1().ConfigMaps("cluster-test").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		}
		if err != nil {
			t.Fatalf("root CA ConfigMap: %v", err)
		}
	}

	// A token kubeconfig authenticates as the ServiceAccount, which RBAC
	// allows nothing.
	tok, err := cs.CoreV1().ServiceAccounts("cluster-test").CreateToken(ctx, "default", tokenRequest(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := t.TempDir() + "/sa.kubeconfig"
	if err := c.WriteTokenKubeconfig(kc, "cluster-test", tok.Status.Token); err != nil {
		t.Fatal(err)
	}
	saCfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	saClient := kubernetes.NewForConfigOrDie(saCfg)
	if _, err := saClient.CoreV1().Secrets("cluster-test").List(ctx, metav1.ListOptions{}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("ServiceAccount listing secrets: err = %v, want forbidden (RBAC must be enforced)", err)
	}

	dir := c.Dir
	if len(pidsOf(t, dir)) < 3 {
		t.Fatalf("expected etcd, kube-apiserver and kube-controller-manager running from %s", dir)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if pids := pidsOf(t, dir); len(pids) > 0 {
		t.Fatalf("processes left after Stop: %v", pids)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cluster dir %s left after Stop (err %v)", dir, err)
	}
}

// TestClusterStartFailureCleansUp starts a cluster whose API server exits at
// once: Start must fail fast, say why, and leave no etcd behind.
func TestClusterStartFailureCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	bins, err := cluster.BinariesFromEnv("")
	if err != nil && bins.Etcd == "" {
		cluster.SkipOrFail(t, err)
	}
	bins.APIServer = "/bin/false"
	if bins.ControllerManager == "" {
		bins.ControllerManager = "/bin/false"
	}
	parent := t.TempDir()
	start := time.Now()
	_, err = cluster.Start(context.Background(), cluster.Options{Binaries: bins, Dir: parent})
	if err == nil {
		t.Fatal("Start succeeded with an API server that exits")
	}
	if !strings.Contains(err.Error(), "kube-apiserver") || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("error does not say the API server exited: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("failure took %s; it should be noticed when the process exits", d)
	}
	if pids := pidsOf(t, parent); len(pids) > 0 {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		t.Fatalf("processes left after a failed Start: %v", pids)
	}
	left, _ := os.ReadDir(parent)
	if len(left) > 0 {
		t.Fatalf("cluster dir left after a failed Start: %v", left)
	}
}

func TestBinariesMissing(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
	t.Setenv("TCPREPL_KUBE_CONTROLLER_MANAGER", "")
	t.Setenv("TCPREPL_KUBECTL", "")
	_, err := cluster.BinariesFromEnv(t.TempDir())
	if !errors.Is(err, cluster.ErrBinaryNotFound) || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("err = %v, want ErrBinaryNotFound telling to run make tools", err)
	}
	_, err = cluster.Start(context.Background(), cluster.Options{})
	if !errors.Is(err, cluster.ErrBinaryNotFound) {
		t.Fatalf("Start without binaries: err = %v, want ErrBinaryNotFound", err)
	}
}

func tokenRequest() *authenticationv1.TokenRequest {
	return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
}
