package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/test/harness"
)

// masterPodState is what tells a restarted master pod from the same one.
type masterPodState struct {
	uid, containerID, hash string
	restarts               int
}

func getMasterPod(ctx context.Context, env *harness.Env, master string) (masterPodState, error) {
	out, err := env.Kubectl(ctx, "get", "pod", master+"-0", "--namespace", ns, "-o",
		`jsonpath={.metadata.uid} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.metadata.annotations.tcprepl\.io/restart-config-hash} {.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil {
		return masterPodState{}, err
	}
	f := strings.Fields(out)
	if len(f) != 5 || f[4] != "True" {
		return masterPodState{}, fmt.Errorf("master pod not running and ready: %q", out)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return masterPodState{}, fmt.Errorf("restartCount %q: %w", f[2], err)
	}
	return masterPodState{uid: f[0], containerID: f[1], restarts: n, hash: f[3]}, nil
}

// masterGet decodes one of the master's HTTP API answers, reached through
// its Service as a producer would.
func masterGet(url string, into any) error {
	body, err := scrape(url)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(body), into); err != nil {
		return fmt.Errorf("GET %s: %w: %.200s", url, err, body)
	}
	return nil
}

func streamStatus(base, name string) (masterapi.StreamStatus, error) {
	var resp struct {
		Streams []masterapi.StreamStatus `json:"streams"`
	}
	if err := masterGet(base+"/v1/streams", &resp); err != nil {
		return masterapi.StreamStatus{}, err
	}
	for _, s := range resp.Streams {
		if s.Name == name {
			if s.Error != "" {
				return s, fmt.Errorf("stream %s: %s", name, s.Error)
			}
			return s, nil
		}
	}
	return masterapi.StreamStatus{}, fmt.Errorf("no stream %s in /v1/streams", name)
}

// workerConnections returns the IDs of the master's connections named
// after pod (the operator names a worker's connection after its pod).
func workerConnections(base, pod string) ([]uint64, error) {
	var resp masterapi.ConnectionsResponse
	if err := masterGet(base+"/v1/connections", &resp); err != nil {
		return nil, err
	}
	var ids []uint64
	for _, c := range resp.Connections {
		if c.Name == pod {
			ids = append(ids, c.ID)
		}
	}
	return ids, nil
}

// TestMasterLiveConfigChange changes a live setting of a running master
// (retention) through its ReplicationMaster: the operator updates the
// ConfigMap but not the pod template, the kubelet updates the mounted file,
// and the master applies the new retention without a restart and without
// dropping its worker's connection. A restart setting (a new custom
// stream) then rolls the pod.
func TestMasterLiveConfigChange(t *testing.T) {
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
	master, ports, err := env.ApplyMaster(ctx, ns, filepath.Join(samples, "replication_v1alpha1_replicationmaster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const worker = "live"
	manifest := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(manifest, fmt.Appendf(nil, `apiVersion: replication.tcprepl.io/v1alpha1
kind: ReplicationWorker
metadata:
  name: %s
spec:
  masterRef:
    name: %s
  replicas: 1
  streams: [%s]
  sink: stdout
`, worker, master, stream), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, ns, manifest); err != nil {
		t.Fatal(err)
	}
	masterIP, err := env.Kubelet.ServiceIP(ns, master)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + net.JoinHostPort(masterIP, strconv.Itoa(ports.HTTP))

	// The worker subscribes from the master's current token on its first
	// start: wait for it before publishing.
	var workerPod string
	eventually(t, 3*time.Minute, "master ready and the worker subscribed", func() error {
		var ms masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &ms); err != nil {
			return err
		}
		if err := condTrue(ms.Conditions, "Ready"); err != nil {
			return err
		}
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		if err := workerCaughtUp(st, 1, stream, masterToken(ms, stream)); err != nil {
			return err
		}
		workerPod = st.Pods[0].Name
		return nil
	})
	published := publishBatches(t, ctx, env, master, ports, 10, "before")
	last := published[len(published)-1].token
	eventually(t, 2*time.Minute, "worker caught up", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 1, stream, last)
	})
	before, err := streamStatus(base, stream)
	if err != nil {
		t.Fatal(err)
	}
	if before.Rows != 20 || before.OldestToken > published[0].token {
		t.Fatalf("before the change: %s holds %d rows from token %d, want the 20 rows published from token %d", stream, before.Rows, before.OldestToken, published[0].token)
	}
	pod0, err := getMasterPod(ctx, env, master)
	if err != nil {
		t.Fatal(err)
	}
	conns0, err := workerConnections(base, workerPod)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns0) != 1 {
		t.Fatalf("master's connections named %s: %v, want one", workerPod, conns0)
	}
	metrics, err := scrape(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	applied0, _ := metricValue(metrics, "tcprepl_master_config_reloads_total", map[string]string{"result": "applied"})

	// A live setting: keep the last 4 rows of each stream.
	const maxRows = 4
	if _, err := env.Kubectl(ctx, "patch", "rmaster", master, "--namespace", ns, "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"retention":{"maxRows":%d}}}`, maxRows)); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the operator renders maxRows into the master's ConfigMap", func() error {
		out, err := env.Kubectl(ctx, "get", "configmap", "--namespace", ns, "-l", "app.kubernetes.io/instance="+master,
			"-o", "jsonpath={.items[*].data}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, fmt.Sprintf("maxRows: %d", maxRows)) {
			return fmt.Errorf("ConfigMap data %.300s", out)
		}
		return nil
	})
	eventually(t, time.Minute, "the master reloads its config", func() error {
		body, err := scrape(base + "/metrics")
		if err != nil {
			return err
		}
		if v, ok := metricValue(body, "tcprepl_master_config_reloads_total", map[string]string{"result": "applied"}); !ok || v < applied0+1 {
			return fmt.Errorf(`tcprepl_master_config_reloads_total{result="applied"} = %v (present %v), want >= %v`, v, ok, applied0+1)
		}
		return nil
	})
	body, err := scrape(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(body, "tcprepl_master_config_restart_pending", nil); ok && v != 0 {
		t.Errorf("tcprepl_master_config_restart_pending = %v after a live change, want 0", v)
	}
	// Retention runs every retentionInterval (10s by default).
	var trimmed masterapi.StreamStatus
	eventually(t, time.Minute, "the new retention trims the stream", func() error {
		st, err := streamStatus(base, stream)
		if err != nil {
			return err
		}
		if st.Rows > maxRows || st.OldestToken <= before.OldestToken {
			return fmt.Errorf("%s holds %d rows from token %d (before: %d from %d), want at most %d and a later oldest token",
				stream, st.Rows, st.OldestToken, before.Rows, before.OldestToken, maxRows)
		}
		trimmed = st
		return nil
	})
	t.Logf("%s: %d rows from token %d before, %d rows from token %d after maxRows=%d", stream, before.Rows, before.OldestToken, trimmed.Rows, trimmed.OldestToken, maxRows)

	// Same pod, same process, same worker connection.
	pod1, err := getMasterPod(ctx, env, master)
	if err != nil {
		t.Fatal(err)
	}
	if pod1 != pod0 {
		t.Errorf("master pod after a live change: %+v, want the same pod, process and restart hash as before: %+v", pod1, pod0)
	}
	if pod0.restarts != 0 {
		t.Errorf("master container restarted %d times", pod0.restarts)
	}
	conns1, err := workerConnections(base, workerPod)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns1) != 1 || conns1[0] != conns0[0] {
		t.Errorf("master's connections named %s after a live change: %v, want the one from before, %v (the worker reconnected)", workerPod, conns1, conns0)
	}
	more := publishBatches(t, ctx, env, master, ports, 3, "after-live")
	last = more[len(more)-1].token
	eventually(t, time.Minute, "worker caught up after the live change", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 1, stream, last)
	})
	if ids, err := workerConnections(base, workerPod); err != nil || len(ids) != 1 || ids[0] != conns0[0] {
		t.Errorf("worker connection after publishing on: %v %v, want %v", ids, err, conns0)
	}

	// A restart setting: a second custom stream. The restart hash changes
	// and the StatefulSet replaces the pod.
	const extra = "audit_extra"
	if _, err := env.Kubectl(ctx, "patch", "rmaster", master, "--namespace", ns, "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"streams":{"custom":[{"name":%q},{"name":%q}]}}}`, stream, extra)); err != nil {
		t.Fatal(err)
	}
	var pod2 masterPodState
	eventually(t, 3*time.Minute, "the master pod rolled for a restart setting", func() error {
		p, err := getMasterPod(ctx, env, master)
		if err != nil {
			return err
		}
		if p.uid == pod0.uid {
			return fmt.Errorf("still pod %s", p.uid)
		}
		pod2 = p
		return nil
	})
	if pod2.hash == pod0.hash {
		t.Errorf("pod annotation %s unchanged (%s) after a restart setting changed", specs.AnnotationConfigHash, pod2.hash)
	}
	eventually(t, time.Minute, "the new pod serves the new stream", func() error {
		_, err := streamStatus(base, extra)
		return err
	})
	tok, err := env.Publish(ctx, ns, master, ports, stream, []any{[]any{"after-restart", 1}})
	if err != nil {
		t.Fatal(err)
	}
	if tok <= last {
		t.Fatalf("token after the roll %d, want > %d", tok, last)
	}
	eventually(t, 2*time.Minute, "worker caught up after the roll", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 1, stream, tok)
	})
}
