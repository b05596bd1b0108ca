package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/test/harness"
)

// pluginPath makes a directory holding the built tcprepl binary under the
// name kubectl looks for (kubectl-tcprepl), as `make install-plugin` does,
// and returns a PATH with it first.
func pluginPath(t *testing.T, env *harness.Env) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(env.Tools.Tcprepl, filepath.Join(dir, "kubectl-tcprepl")); err != nil {
		t.Fatal(err)
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

// kubectlPlugin runs the built kubectl with PATH (so that kubectl finds the
// plugin there) and returns stdout, stderr and the exit code.
func kubectlPlugin(ctx context.Context, t *testing.T, env *harness.Env, path string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.Tools.Cluster.Kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Cluster.Kubeconfig, "PATH="+path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// TestKubectlPlugin runs `kubectl tcprepl status` and `kubectl tcprepl
// probe` through the built kubectl, which finds the tcprepl binary on PATH
// as kubectl-tcprepl, against a real master and workers. The master is
// applied as a user applies it (no probe annotations), so the plugin finds
// it by its pod's IP, which the test kubelet puts on this machine.
func TestKubectlPlugin(t *testing.T) {
	env, ctx := setup(t)
	samples := filepath.Join(env.RepoRoot, "config", "samples")
	if err := env.InstallChart(ctx, release, operatorNS); err != nil {
		t.Fatal(err)
	}
	if err := env.StartOperator(ctx, operatorNS, release,
		"--status-interval=1s", "--probe-heartbeat-interval=1s", "--probe-poll-interval=250ms"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "default ServiceAccount in "+ns, func() error {
		_, err := env.Kubectl(ctx, "get", "serviceaccount", "default", "--namespace", ns)
		return err
	})
	const master, worker = "synapse", "synapse-all"
	for _, f := range []string{"replication_v1alpha1_replicationmaster.yaml", "replication_v1alpha1_replicationworker_all.yaml"} {
		if _, err := env.Kubectl(ctx, "apply", "--namespace", ns, "-f", filepath.Join(samples, f)); err != nil {
			t.Fatal(err)
		}
	}
	ports := harness.MasterPorts{Replication: 9092, HTTP: 9093}
	var last int64
	eventually(t, 3*time.Minute, "workers subscribed", func() error {
		var ms masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &ms); err != nil {
			return err
		}
		if err := condTrue(ms.Conditions, "Ready"); err != nil {
			return err
		}
		if last = masterToken(ms, stream); last < 0 {
			return fmt.Errorf("no %s stream in status", stream)
		}
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 2, stream, last)
	})
	published := publishBatches(t, ctx, env, master, ports, 3, "plugin")
	last = published[len(published)-1].token
	eventually(t, 2*time.Minute, "workers caught up", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 2, stream, last)
	})
	eventually(t, time.Minute, "the master's status at the last token", func() error {
		var ms masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &ms); err != nil {
			return err
		}
		if got := masterToken(ms, stream); got != last {
			return fmt.Errorf("status %s token %d, want %d", stream, got, last)
		}
		return nil
	})
	podIP, err := env.Kubelet.PodIP(ns, master+"-0")
	if err != nil {
		t.Fatal(err)
	}
	path := pluginPath(t, env)

	// kubectl lists the plugin it found on PATH.
	out, _, code := kubectlPlugin(ctx, t, env, path, "plugin", "list", "--name-only")
	if code != 0 || !strings.Contains(out, "kubectl-tcprepl") {
		t.Fatalf("kubectl plugin list (exit %d) does not list kubectl-tcprepl:\n%s", code, out)
	}

	t.Run("status of a master", func(t *testing.T) {
		out, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "status", master, "-n", ns)
		t.Logf("kubectl tcprepl status %s -n %s:\n%s", master, ns, out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{
			"ReplicationMaster " + ns + "/" + master,
			"Ready: True",
			"Server name: matrix.example.org",
			"Publish token: Secret synapse-publish-token, key token",
			fmt.Sprintf("%s %d ", stream, last), // the stream's position in status
			master + "-0 (probed) true Running",
			worker + " 2/2 2/2",
			"Events (newest first)",
			// The live probe reached the pod and saw both worker pods.
			fmt.Sprintf("Live probe of %s-0 at %s (from the pod %s-0 IP)", master, net.JoinHostPort(podIP, "9092"), master),
			"Status: reachable",
			worker + "-0",
			worker + "-1",
		} {
			if !strings.Contains(squashSpaces(out), squashSpaces(want)) {
				t.Errorf("status lacks %q", want)
			}
		}
	})

	t.Run("status as JSON", func(t *testing.T) {
		out, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "status", master, "-n", ns, "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var got struct {
			Kind   string `json:"kind"`
			Master struct {
				Pods []struct {
					Name  string `json:"name"`
					Ready bool   `json:"ready"`
				} `json:"pods"`
				Workers []struct {
					Name      string `json:"name"`
					Connected string `json:"connected"`
				} `json:"workers"`
				Probe struct {
					Snapshot struct {
						Reachable bool `json:"reachable"`
						Streams   []struct {
							Name  string `json:"name"`
							Token int64  `json:"token"`
						} `json:"streams"`
					} `json:"snapshot"`
				} `json:"probe"`
			} `json:"master"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		m := got.Master
		if got.Kind != "ReplicationMaster" || len(m.Pods) != 1 || !m.Pods[0].Ready || len(m.Workers) != 1 || m.Workers[0].Connected != "2/2" || !m.Probe.Snapshot.Reachable {
			t.Fatalf("status JSON = %+v", got)
		}
		token := int64(-1)
		for _, s := range m.Probe.Snapshot.Streams {
			if s.Name == stream {
				token = s.Token
			}
		}
		if token != last {
			t.Errorf("the live probe saw %s at %d, want %d", stream, token, last)
		}
	})

	t.Run("status of a worker", func(t *testing.T) {
		out, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "status", worker, "-n", ns)
		t.Logf("kubectl tcprepl status %s -n %s:\n%s", worker, ns, out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{
			"ReplicationWorker " + ns + "/" + worker,
			"Master: synapse (Ready: True",
			"Replicas: 2 desired, 2 ready, 2 connected, 0 lagging",
			worker + "-0 true true 0",
			worker + "-1 true true 0",
		} {
			if !strings.Contains(squashSpaces(out), squashSpaces(want)) {
				t.Errorf("worker status lacks %q", want)
			}
		}
	})

	t.Run("probe resolves the master from the resource", func(t *testing.T) {
		out, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "probe", master, "-n", ns, "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, stderr, out)
		}
		var snap struct {
			Reachable            bool   `json:"reachable"`
			ServerName           string `json:"serverName"`
			Address              string `json:"address"`
			ConnectionsAvailable bool   `json:"connectionsAvailable"`
			Connections          []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		if err := json.Unmarshal([]byte(out), &snap); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if !snap.Reachable || snap.ServerName != "matrix.example.org" || snap.Address != net.JoinHostPort(podIP, "9092") || !snap.ConnectionsAvailable || len(snap.Connections) != 2 {
			t.Fatalf("probe = %+v", snap)
		}
	})

	t.Run("--probe-address through the Service", func(t *testing.T) {
		ip, err := env.Kubelet.ServiceIP(ns, master)
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(ports.Replication))
		out, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "probe", master, "-n", ns, "--probe-address", addr)
		if code != 0 || !strings.Contains(squashSpaces(out), "Status: reachable") || !strings.Contains(out, addr) {
			t.Fatalf("exit %d: %s\n%s", code, stderr, out)
		}
	})

	t.Run("a master that cannot be reached fails the probe, not the status", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := l.Addr().String()
		_ = l.Close()
		out, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "probe", master, "-n", ns, "--probe-address", closed, "--probe-wait", "2s")
		if code != 1 || !strings.Contains(stderr, "master unreachable") || !strings.Contains(out, "UNREACHABLE") {
			t.Fatalf("probe of a closed port: exit %d, stderr %q, stdout:\n%s", code, stderr, out)
		}
		out, stderr, code = kubectlPlugin(ctx, t, env, path, "tcprepl", "status", master, "-n", ns, "--probe-address", closed, "--probe-wait", "2s")
		if code != 0 || !strings.Contains(out, "UNREACHABLE") || !strings.Contains(out, "Use --probe-address") {
			t.Fatalf("status with a closed probe port: exit %d, stderr %q, stdout:\n%s", code, stderr, out)
		}
	})

	t.Run("a resource that does not exist", func(t *testing.T) {
		_, stderr, code := kubectlPlugin(ctx, t, env, path, "tcprepl", "status", "nosuch", "-n", ns)
		if code != 1 || !strings.Contains(stderr, "no ReplicationMaster or ReplicationWorker nosuch in namespace "+ns) {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
}

// squashSpaces collapses runs of spaces and tabs, so that a check does not
// depend on column widths.
func squashSpaces(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == ' ' || r == '\t' {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}
