package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcprepl/tcprepl/internal/pgtest"
	"github.com/tcprepl/tcprepl/test/harness"
)

// failoverBound is the bound from a kill of the active master to
// the next acknowledged publish (issue 12).
const failoverBound = 5 * time.Second

// TestMasterFailoverOnPostgres: a master with 2 replicas on a real
// PostgreSQL (a process beside the cluster), 2 worker pods with file sinks
// and a publisher writing numbered rows. The active master's process is
// killed with SIGKILL three times: each time the standby takes over and the
// next publish is acknowledged within failoverBound; every acknowledged row
// reaches both sinks exactly once and in order, and the acknowledged tokens
// only go up. Then the active master is frozen with SIGSTOP for 30 s (its
// session to PostgreSQL stays open): the standby takes over within the same
// bound and the frozen master, resumed, acknowledges nothing.
func TestMasterFailoverOnPostgres(t *testing.T) {
	// Probes run at the periods the operator sets, as on a node (the test
	// kubelet caps them at 1 s by default): the readiness probe that moves
	// the Service is 1 s anyway, and a frozen master must meet the liveness
	// probe a real kubelet runs (10 s, 3 failures), not one that kills it
	// after 3 s and hides what it does when it resumes.
	env, ctx := setup(t, func(o *harness.Options) { o.MaxProbePeriod = 10 * time.Second })
	pg := pgtest.Start(t)
	dsn, err := keyValueDSN(pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}

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
	if _, err := env.Kubectl(ctx, "create", "secret", "generic", "log-db", "--namespace", ns, "--from-literal=uri="+dsn); err != nil {
		t.Fatal(err)
	}

	const master, worker = "ha", "sinks"
	dir := t.TempDir()
	masterFile := filepath.Join(dir, "master.yaml")
	if err := os.WriteFile(masterFile, []byte(fmt.Sprintf(`apiVersion: replication.tcprepl.io/v1alpha1
kind: ReplicationMaster
metadata:
  name: %s
spec:
  serverName: failover.example.org
  replicas: 2
  storage:
    postgres:
      uriSecretRef: {name: log-db, key: uri}
  streams:
    custom:
    - name: %s
`, master, stream)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, ports, err := env.ApplyMaster(ctx, ns, masterFile)
	if err != nil {
		t.Fatal(err)
	}
	workerFile := filepath.Join(dir, "worker.yaml")
	if err := os.WriteFile(workerFile, []byte(fmt.Sprintf(`apiVersion: replication.tcprepl.io/v1alpha1
kind: ReplicationWorker
metadata:
  name: %s
spec:
  masterRef:
    name: %s
  replicas: 2
  streams: [%s]
  sink: file:/var/lib/tcprepl-worker/rows.jsonl
`, worker, master, stream)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, ns, workerFile); err != nil {
		t.Fatal(err)
	}

	waitStandby := func(what string) haStatus {
		t.Helper()
		var st haStatus
		eventually(t, 3*time.Minute, what, func() error {
			if err := getStatus(ctx, env, "rmaster", master, &st); err != nil {
				return err
			}
			if st.ActivePod == "" || st.ReadyStandbys != 1 {
				return fmt.Errorf("active pod %q, %d ready standbys", st.ActivePod, st.ReadyStandbys)
			}
			return nil
		})
		return st
	}
	waitStandby("an active master and a ready standby")
	var sinks []string
	eventually(t, 3*time.Minute, "both worker pods connected", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		sinks = sinks[:0]
		for _, p := range st.Pods {
			if !p.Connected {
				return fmt.Errorf("pod %s not connected", p.Name)
			}
			sinks = append(sinks, p.Name)
		}
		if len(sinks) != 2 {
			return fmt.Errorf("pods %v, want two", sinks)
		}
		return nil
	})

	token, err := publishToken(ctx, env, master)
	if err != nil {
		t.Fatal(err)
	}
	serviceIP, err := env.Kubelet.ServiceIP(ns, master)
	if err != nil {
		t.Fatal(err)
	}
	pub := startRetryingPublisher(ctx, "http://"+net.JoinHostPort(serviceIP, strconv.Itoa(ports.HTTP)), token)
	t.Cleanup(func() { pub.stop() })
	pub.waitAcked(t, 20, time.Minute)

	// Three kills of whichever master is active. The next master is the
	// standby or, if the killed pod's restarted process gets the log
	// first (the test kubelet restarts it within a second; a node that
	// died would not), the same pod: the bound holds either way, and a
	// takeover by another pod must show in the status.
	takeovers := 0
	for kill := 1; kill <= 3; kill++ {
		victim := activeMasterPod(ctx, t, env, master, 0)
		at := time.Now()
		if err := syscall.Kill(victim.pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d (pod %s): %v", victim.pid, victim.name, err)
		}
		took := pub.nextAckAfter(t, at, time.Minute)
		next := activeMasterPod(ctx, t, env, master, victim.pid)
		how := "taken over by the standby " + next.name
		if next.name == victim.name {
			how = "the killed pod's restarted process got the log first"
		}
		t.Logf("kill %d: SIGKILL to %s (pid %d); next acknowledged publish after %s; %s", kill, victim.name, victim.pid, took.Round(time.Millisecond), how)
		if took > failoverBound {
			t.Errorf("kill %d: %s from the kill to the next acknowledged publish, above the bound of %s", kill, took.Round(time.Millisecond), failoverBound)
		}
		if next.name != victim.name {
			takeovers++
			eventually(t, time.Minute, fmt.Sprintf("kill %d: status shows the takeover by %s", kill, next.name), func() error {
				var st haStatus
				if err := getStatus(ctx, env, "rmaster", master, &st); err != nil {
					return err
				}
				if st.ActivePod != next.name || st.LastTakeoverTime == nil || st.LastTakeoverTime.Time.Before(at.Add(-time.Second).Truncate(time.Second)) {
					return fmt.Errorf("active pod %q, last takeover %v", st.ActivePod, st.LastTakeoverTime)
				}
				return nil
			})
		}
		waitStandby(fmt.Sprintf("kill %d: an active master and a ready standby again", kill))
		pub.waitAcked(t, pub.acked()+10, time.Minute)
	}
	t.Logf("%d of 3 kills were taken over by the standby", takeovers)
	if takeovers > 0 {
		eventually(t, time.Minute, "a Takeover event", func() error {
			out, err := env.Kubectl(ctx, "get", "events", "--namespace", ns, "--field-selector", "reason=Takeover", "-o", "name")
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) == "" {
				return fmt.Errorf("no Takeover event yet")
			}
			return nil
		})
	}

	t.Run("SIGSTOP", func(t *testing.T) {
		victim := activeMasterPod(ctx, t, env, master, 0)
		if !readyzHasRole(t, victim.ip, ports.HTTP) {
			t.Skip("the master's /readyz carries no role: frozen-master fencing (a lease in PostgreSQL, issue 12) is not in this build; without it a frozen master keeps the advisory lock and nothing takes over")
		}
		at := time.Now()
		if err := syscall.Kill(victim.pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %d: %v", victim.pid, err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = syscall.Kill(victim.pid, syscall.SIGCONT)
			}
		}
		t.Cleanup(resume)
		took := pub.nextAckAfter(t, at, time.Minute)
		t.Logf("SIGSTOP to %s (pid %d); next acknowledged publish after %s", victim.name, victim.pid, took.Round(time.Millisecond))
		if took > failoverBound {
			t.Errorf("%s from freezing the active master to the next acknowledged publish, above the bound of %s", took.Round(time.Millisecond), failoverBound)
		}
		time.Sleep(time.Until(at.Add(30 * time.Second)))
		if err := syscall.Kill(victim.pid, 0); err != nil {
			t.Errorf("the frozen master's process %d is gone before its 30 s freeze ended (%v): the resumed case is not exercised", victim.pid, err)
		}
		resume()
		t.Logf("resumed %s (pid %d) after %s frozen", victim.name, victim.pid, time.Since(at).Round(time.Millisecond))
		// The resumed master must not store or acknowledge a row: it finds
		// itself fenced. Publish to it directly, past the Service.
		frozenURL := "http://" + net.JoinHostPort(victim.ip, strconv.Itoa(ports.HTTP))
		refused := 0
		var lastRefusal error
		for i := 0; i < 50; i++ {
			tok, err := publishSeqRow(ctx, frozenURL, token, fmt.Sprintf("fenced-%d", i))
			if err == nil {
				t.Fatalf("the resumed master %s acknowledged a row with token %d after being frozen", victim.name, tok)
			}
			refused++
			lastRefusal = err
			// Until its lease renewal fails it may still call itself
			// ready for a moment; what it must never do is commit.
			if ready, body := readyz(victim.ip, ports.HTTP); ready {
				t.Logf("%s after resuming: /readyz 200 %s", time.Since(at).Round(time.Millisecond), body)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("the resumed master refused %d publishes (last: %v)", refused, lastRefusal)
		if p, err := env.Client.CoreV1().Pods(ns).Get(ctx, victim.name, metav1.GetOptions{}); err == nil {
			t.Logf("after resuming: pod %s container %s, restarts %d", victim.name, containerIDOf(p), restartsOf(p))
		}
		waitStandby("the resumed master back as a standby")
		pub.waitAcked(t, pub.acked()+10, time.Minute)
	})

	total, acks := pub.stop()
	t.Logf("published: %d rows acknowledged, %d publishes failed during takeovers", len(acks), pub.failures())
	var last int64
	for i, a := range acks {
		if a.token <= last {
			t.Fatalf("acknowledged tokens went back or repeated: row %d got %d after %d", a.row, a.token, last)
		}
		last = a.token
		if i > 0 && a.row <= acks[i-1].row {
			t.Fatalf("publisher bug: row %d acknowledged after row %d", a.row, acks[i-1].row)
		}
	}
	for _, pod := range sinks {
		eventually(t, 2*time.Minute, "sink of "+pod+" holds every acknowledged row once, in order", func() error {
			rows, err := sinkRows(ctx, env, pod)
			if err != nil {
				return err
			}
			return ackedRowsOnceInOrder(rows, acks, total)
		})
	}
}

// haStatus is the part of a ReplicationMaster's status about standbys.
type haStatus struct {
	ActivePod        string       `json:"activePod"`
	ReadyStandbys    int32        `json:"readyStandbys"`
	LastTakeoverTime *metav1.Time `json:"lastTakeoverTime"`
}

// masterProcess is the process of a master pod, as the test kubelet runs
// it (container id "testkubelet://PID").
type masterProcess struct {
	name, ip string
	pid      int
}

// activeMasterPod finds the ready (active) master pod and its process,
// waiting for one whose process is not notPID (0: any).
func activeMasterPod(ctx context.Context, t *testing.T, env *harness.Env, master string, notPID int) masterProcess {
	t.Helper()
	var found masterProcess
	eventually(t, 2*time.Minute, "the active master's process", func() error {
		pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=master,app.kubernetes.io/instance=" + master})
		if err != nil {
			return err
		}
		var ready []masterProcess
		for i := range pods.Items {
			p := &pods.Items[i]
			if !podIsReady(p) || p.DeletionTimestamp != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimPrefix(containerIDOf(p), "testkubelet://"))
			if err != nil || pid <= 0 {
				return fmt.Errorf("pod %s: container id %q is not the test kubelet's", p.Name, containerIDOf(p))
			}
			if pid != notPID {
				ready = append(ready, masterProcess{name: p.Name, ip: p.Status.PodIP, pid: pid})
			}
		}
		if len(ready) != 1 {
			return fmt.Errorf("ready master pods %+v, want exactly one", ready)
		}
		found = ready[0]
		return nil
	})
	return found
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerIDOf(p *corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "master" {
			return c.ContainerID
		}
	}
	return ""
}

func restartsOf(p *corev1.Pod) int32 {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "master" {
			return c.RestartCount
		}
	}
	return 0
}

// readyz reports whether a master answers /readyz with 200, and the body.
func readyz(ip string, port int) (bool, string) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(b))
}

// readyzHasRole reports whether the master's /readyz body is JSON with a
// "role" field (the fencing build reports "active" or "standby").
func readyzHasRole(t *testing.T, ip string, port int) bool {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz of the active master: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(b, &body); err != nil {
		return false
	}
	_, ok := body["role"]
	return ok
}

func publishToken(ctx context.Context, env *harness.Env, master string) (string, error) {
	out, err := env.Kubectl(ctx, "get", "secret", master+"-publish-token", "--namespace", ns, "-o", "jsonpath={.data.token}")
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		return "", fmt.Errorf("decode the publish token: %w", err)
	}
	return string(b), nil
}

// publishSeqRow publishes ["seq", n, "row-n"] (n from label "row-N"; any
// other label gets n = -1) and returns the token the master acknowledged. A
// request gets 1 s: one that reached a master that then froze or died
// must not hold the publisher for a good part of the takeover bound.
func publishSeqRow(ctx context.Context, baseURL, token, label string) (int64, error) {
	var row []any
	if n, err := strconv.Atoi(strings.TrimPrefix(label, "row-")); err == nil && strings.HasPrefix(label, "row-") {
		row = []any{"seq", n, label}
	} else {
		row = []any{"seq", -1, label}
	}
	body, err := json.Marshal(map[string]any{"rows": []any{row}})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/streams/"+stream+"/rows", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(rb)))
	}
	var out struct {
		Token int64 `json:"token"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return 0, fmt.Errorf("%w: %s", err, rb)
	}
	return out.Token, nil
}

// ack is one acknowledged publish.
type ack struct {
	row     int
	token   int64
	started time.Time // when the request was sent
	ackedAt time.Time // when its acknowledgement arrived
}

// retryingPublisher publishes rows 0, 1, 2, ... one per request through the
// master's Service. A failed publish is not retried with the same number (it
// may have been stored without its acknowledgement arriving); the next
// number follows, so an unacknowledged row may appear in a sink at most
// once, and an acknowledged one exactly once.
type retryingPublisher struct {
	stopping chan struct{}
	done     chan struct{}
	once     sync.Once

	mu      sync.Mutex
	next    int
	acks    []ack
	failed  int
	lastErr string // the newest failure, for the wait's messages
}

func startRetryingPublisher(ctx context.Context, baseURL, token string) *retryingPublisher {
	p := &retryingPublisher{stopping: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stopping:
				return
			case <-ctx.Done():
				return
			default:
			}
			p.mu.Lock()
			n := p.next
			p.next++
			p.mu.Unlock()
			started := time.Now()
			tok, err := publishSeqRow(ctx, baseURL, token, fmt.Sprintf("row-%d", n))
			p.mu.Lock()
			if err == nil {
				p.acks = append(p.acks, ack{row: n, token: tok, started: started, ackedAt: time.Now()})
			} else {
				p.failed++
				p.lastErr = err.Error()
			}
			p.mu.Unlock()
			if err != nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return p
}

func (p *retryingPublisher) acked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acks)
}

func (p *retryingPublisher) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *retryingPublisher) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	failedBefore := p.failures()
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.failed > failedBefore {
			t.Logf("%d publishes failed while waiting, the last with: %s", p.failed-failedBefore, p.lastErr)
		}
	}()
	eventually(t, timeout, fmt.Sprintf("%d rows acknowledged", n), func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if got := len(p.acks); got < n {
			return fmt.Errorf("%d acknowledged, %d publishes failed, the last with: %s", got, p.failed, p.lastErr)
		}
		return nil
	})
}

// nextAckAfter waits for the first acknowledged publish whose request was
// sent after at (one sent before may have reached the master before it
// died) and returns the time from at to its acknowledgement: what a
// producer waits through a takeover.
func (p *retryingPublisher) nextAckAfter(t *testing.T, at time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, a := range p.acks {
			if !a.started.Before(at) {
				p.mu.Unlock()
				return a.ackedAt.Sub(at)
			}
		}
		p.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no publish acknowledged within %s after %s (%d failed)", timeout, at.Format(time.RFC3339Nano), p.failures())
	return 0
}

// stop ends publishing between two rows and returns how many row numbers
// were used and the acknowledged publishes in order.
func (p *retryingPublisher) stop() (int, []ack) {
	p.once.Do(func() { close(p.stopping) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next, append([]ack(nil), p.acks...)
}

// ackedRowsOnceInOrder checks a sink against the publisher: row numbers
// strictly increase (no duplicate, nothing out of order), every
// acknowledged row is there, and nothing outside the numbers used is.
func ackedRowsOnceInOrder(rows []json.RawMessage, acks []ack, used int) error {
	seen := make(map[int]bool, len(rows))
	last := -1
	for i, raw := range rows {
		var r []any
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("sink row %d %s: %w", i, raw, err)
		}
		if len(r) != 3 {
			return fmt.Errorf("sink row %d is %s: not a published row", i, raw)
		}
		f, ok := r[1].(float64)
		n := int(f)
		if !ok || n < 0 || n >= used || r[2] != fmt.Sprintf("row-%d", n) {
			return fmt.Errorf("sink row %d is %s: never published", i, raw)
		}
		if n <= last {
			return fmt.Errorf("sink row %d is row %d after row %d: duplicated or out of order", i, n, last)
		}
		last = n
		seen[n] = true
	}
	for _, a := range acks {
		if !seen[a.row] {
			return fmt.Errorf("acknowledged row %d (token %d) is missing (%d rows in the sink, last %d)", a.row, a.token, len(rows), last)
		}
	}
	return nil
}

// keyValueDSN turns pgtest's URI into the key/value form. The test kubelet
// gives each pod its own loopback address and rewrites "127.0.0.1:PORT" and
// URL hosts in a pod's environment to it ("localhost" is the pod itself);
// PostgreSQL runs beside the cluster on 127.0.0.1, which "host=127.0.0.1"
// keeps naming, as a database outside the cluster has an address of its own.
func keyValueDSN(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("parse pgtest DSN: %w", err)
	}
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", u.Hostname(), u.Port(), u.User.Username(), strings.TrimPrefix(u.Path, "/")), nil
}
