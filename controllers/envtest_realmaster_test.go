package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/probe"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// tcpreplBinary builds cmd/tcprepl once per test run.
func tcpreplBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tcprepl-envtest-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "tcprepl")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/tcprepl")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/tcprepl: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// masterServing waits for the "master serving" line in a master's log
// and returns the addresses it listens on: the master is started on port
// 0, so the kernel picks free ports and nothing can take them first.
func masterServing(t *testing.T, logPath string) (replAddr, httpAddr string) {
	t.Helper()
	eventually(t, 60*time.Second, "master serving", func() error {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			var ev struct{ Msg, Replication, HTTP string }
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Msg == "master serving" {
				replAddr, httpAddr = ev.Replication, ev.HTTP
				return nil
			}
		}
		return fmt.Errorf("no \"master serving\" line yet in %s", logPath)
	})
	return replAddr, httpAddr
}

// startProcess runs the binary until the test ends, then stops it with
// SIGTERM (the graceful path) and waits. It returns the path of the
// process's output.
func startProcess(t *testing.T, bin string, args ...string) string {
	t.Helper()
	_, logPath := startProcessCmd(t, bin, args...)
	return logPath
}

// startProcessCmd is startProcess that also gives the process, for tests
// that signal it.
func startProcessCmd(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	// No publish token: the test publishes without one.
	cmd.Env = append(os.Environ(), "TCPREPL_PUBLISH_TOKEN=")
	logPath := filepath.Join(t.TempDir(), "out.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", args[0], err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s output:\n%s", args[0], b)
		}
	})
	return cmd, logPath
}

func publish(t *testing.T, httpURL, stream string, rows ...any) int64 {
	t.Helper()
	var req masterapi.PublishRequest
	for _, r := range rows {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		req.Rows = append(req.Rows, b)
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(httpURL+"/v1/streams/"+stream+"/rows", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	var out masterapi.PublishResponse
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("publish reply: %v", err)
	}
	return out.Token
}

// TestStatusFromRealMasterAndProbe runs a real `tcprepl master` and
// `tcprepl worker` as local processes, the operator with its real probes
// pointed at the master through the override annotations, and checks that
// positions, heartbeat and per-pod lag reach the resources' status.
func TestStatusFromRealMasterAndProbe(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	bin := tcpreplBinary(t)
	masterLog := startProcess(t, bin, "master", "--server-name=real.example.org", "--replication-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0", "--ephemeral")
	replAddr, httpAddr := masterServing(t, masterLog)
	httpURL := "http://" + httpAddr
	eventually(t, 30*time.Second, "master ready", func() error {
		resp, err := http.Get(httpURL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})

	ns := newNamespace(t)
	startOperator(t, ns, OperatorOptions{
		NewProber: func(tg ProbeTarget) (Prober, error) {
			return probe.New(probe.Config{Address: tg.Address, ServerName: tg.ServerName, HTTPURL: tg.HTTPURL, HeartbeatInterval: 300 * time.Millisecond})
		},
		StatusInterval: time.Second,
	})

	m := minimalMaster(ns, "real")
	m.Spec.ServerName = "real.example.org"
	m.Annotations = map[string]string{specs.AnnotationProbeAddress: replAddr, specs.AnnotationProbeHTTPURL: httpURL}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Stand in for the StatefulSet controller: the pod is ready.
	var sts appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, "real", &sts) })
	sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, CurrentRevision: "r1", UpdateRevision: "r1"}
	if err := k8s.Status().Update(ctx, &sts); err != nil {
		t.Fatal(err)
	}

	var last int64
	for i := range 3 {
		last = publish(t, httpURL, "push_rules", []any{fmt.Sprintf("@u%d:example.org", i)}, []any{"@batch:example.org"})
	}
	mkey := client.ObjectKeyFromObject(m)
	eventually(t, 30*time.Second, "master status from the probe", func() error {
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, mkey, &live); err != nil {
			return err
		}
		st := live.Status
		if err := conditionIs(st.Conditions, replv1.ConditionReady, "True", replv1.ReasonMasterReady); err != nil {
			return err
		}
		var tok int64 = -1
		var oldest *int64
		for _, s := range st.Streams {
			if s.Name == "push_rules" {
				tok, oldest = s.Token, s.OldestToken
			}
		}
		// Issue 15 item 5: the oldest token the master holds, so a user
		// can tell whether a worker that was down can catch up.
		if oldest == nil || *oldest < 1 || *oldest > last {
			return fmt.Errorf("push_rules oldestToken %v, want one in [1, %d]", oldest, last)
		}
		if tok != last || st.StreamCount < 15 || st.Heartbeat == nil || st.Heartbeat.Last == "" || st.LastProbeTime == nil {
			return fmt.Errorf("push_rules token %d (want %d), %d streams, heartbeat %+v", tok, last, st.StreamCount, st.Heartbeat)
		}
		return nil
	})

	// A real worker process, named like the pod the operator would run.
	w := minimalWorker(ns, "rw", "real")
	w.Spec.Replicas = ptr.To[int32](1)
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	var d appsv1.StatefulSet
	eventually(t, waitFor, "worker StatefulSet", func() error { return get(ctx, ns, "rw", &d) })
	podName := "rw-6d5f-x1"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: ns, Labels: d.Spec.Template.Labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "x"}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// An IP no local connection comes from: the match is by name.
	pod.Status.PodIP = "192.0.2.10"
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	startProcess(t, bin, "worker", "--master="+replAddr, "--server-name=real.example.org", "--streams=ALL",
		"--state-dir="+state, "--sink=file:"+filepath.Join(state, "rows.jsonl"), "--name="+podName)

	last = publish(t, httpURL, "push_rules", []any{"@after:example.org"})
	wkey := client.ObjectKeyFromObject(w)
	eventually(t, 30*time.Second, "worker status from the connection table", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, wkey, &live); err != nil {
			return err
		}
		st := live.Status
		if err := conditionIs(st.Conditions, replv1.ConditionConnected, "True", replv1.ReasonAllConnected); err != nil {
			return err
		}
		if len(st.Pods) != 1 || !st.Pods[0].Connected {
			return fmt.Errorf("pods = %+v", st.Pods)
		}
		for _, s := range st.Pods[0].Streams {
			if s.Name == "push_rules" {
				if s.Token != last || s.TokensBehind != 0 || s.SecondsBehind == "" {
					return fmt.Errorf("push_rules = %+v, want token %d caught up", s, last)
				}
				if st.MaxLag == "" {
					return fmt.Errorf("no maxLag")
				}
				return conditionIs(st.Conditions, replv1.ConditionLagging, "False", replv1.ReasonLagWithinThreshold)
			}
		}
		return fmt.Errorf("no push_rules stream in %+v", st.Pods[0].Streams)
	})

	eventually(t, 30*time.Second, "master counts the worker, not the probe", func() error {
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, mkey, &live); err != nil {
			return err
		}
		if live.Status.ConnectedWorkers != 1 {
			return fmt.Errorf("connected workers = %d, want 1", live.Status.ConnectedWorkers)
		}
		return nil
	})
}

// TestStalledWorkerLagsFromRealProcesses is issue 15 item 2 with real
// processes: a worker frozen with SIGSTOP keeps its connection, and the
// socket buffers take what the master sends, so the master's table says it
// is caught up; its durable position (GET /v1/status) does not move, and
// the status must show it lagging.
func TestStalledWorkerLagsFromRealProcesses(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	bin := tcpreplBinary(t)
	masterLog := startProcess(t, bin, "master", "--server-name=real.example.org", "--replication-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0", "--ephemeral")
	replAddr, httpAddr := masterServing(t, masterLog)
	httpURL := "http://" + httpAddr
	first := publish(t, httpURL, "push_rules", []any{"@before:example.org"})

	const podName = "stall-0"
	state := t.TempDir()
	worker, workerLog := startProcessCmd(t, bin, "worker", "--master="+replAddr, "--server-name=real.example.org", "--streams=push_rules",
		"--state-dir="+state, "--sink=file:"+filepath.Join(state, "rows.jsonl"), "--name="+podName,
		"--from="+strconv.FormatInt(first-1, 10), "--metrics-listen=127.0.0.1:0")
	var metricsPort int
	eventually(t, 60*time.Second, "worker metrics serving", func() error {
		b, err := os.ReadFile(workerLog)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			var ev struct{ Msg, Metrics string }
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Msg == "worker metrics serving" {
				_, port, err := net.SplitHostPort(ev.Metrics)
				if err != nil {
					return err
				}
				metricsPort, err = strconv.Atoi(port)
				return err
			}
		}
		return fmt.Errorf("no \"worker metrics serving\" line yet in %s", workerLog)
	})
	// Resume it before the cleanup's SIGTERM (cleanups run last first).
	t.Cleanup(func() { _ = worker.Process.Signal(syscall.SIGCONT) })

	ns := newNamespace(t)
	startOperator(t, ns, OperatorOptions{
		NewProber: func(tg ProbeTarget) (Prober, error) {
			return probe.New(probe.Config{Address: tg.Address, ServerName: tg.ServerName, HTTPURL: tg.HTTPURL, HeartbeatInterval: 300 * time.Millisecond})
		},
		StatusInterval: time.Second,
		WorkerReader:   &HTTPWorkerReader{Port: metricsPort},
	})
	m := minimalMaster(ns, "real")
	m.Spec.ServerName = "real.example.org"
	m.Annotations = map[string]string{specs.AnnotationProbeAddress: replAddr, specs.AnnotationProbeHTTPURL: httpURL}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	w := minimalWorker(ns, "stall", "real")
	w.Spec.Replicas = ptr.To[int32](1)
	w.Spec.Streams = []string{"push_rules"}
	w.Spec.MaxLagSeconds = 1
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: ns, Labels: specs.WorkerPodLabels(w)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "x"}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP = "127.0.0.1"
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	wkey := client.ObjectKeyFromObject(w)
	pushRules := func(st replv1.ReplicationWorkerStatus) (replv1.WorkerStreamStatus, error) {
		if len(st.Pods) != 1 {
			return replv1.WorkerStreamStatus{}, fmt.Errorf("pods = %+v", st.Pods)
		}
		for _, s := range st.Pods[0].Streams {
			if s.Name == "push_rules" {
				return s, nil
			}
		}
		return replv1.WorkerStreamStatus{}, fmt.Errorf("no push_rules stream in %+v", st.Pods[0].Streams)
	}
	eventually(t, 30*time.Second, "connected, caught up, position reported", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, wkey, &live); err != nil {
			return err
		}
		s, err := pushRules(live.Status)
		if err != nil {
			return err
		}
		if s.Position == nil || *s.Position != first {
			return fmt.Errorf("push_rules = %+v, want position %d", s, first)
		}
		return conditionIs(live.Status.Conditions, replv1.ConditionLagging, "False", replv1.ReasonLagWithinThreshold)
	})

	if err := worker.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 5 {
		last = publish(t, httpURL, "push_rules", []any{fmt.Sprintf("@u%d:example.org", i)}, []any{"@frozen:example.org"})
	}
	eventually(t, 30*time.Second, "the frozen worker lagging", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, wkey, &live); err != nil {
			return err
		}
		s, err := pushRules(live.Status)
		if err != nil {
			return err
		}
		if s.Position == nil || *s.Position != first || s.TokensBehind != last-first {
			return fmt.Errorf("push_rules = %+v, want position %d, %d behind", s, first, last-first)
		}
		return conditionIs(live.Status.Conditions, replv1.ConditionLagging, "True", replv1.ReasonLagAboveThreshold)
	})
}
