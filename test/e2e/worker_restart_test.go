package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/test/harness"
)

// A deleted worker pod comes back with the positions it had: its file sink
// holds every row published before, while and after it was gone, exactly
// once and in order (issue 11, item 7). With positions in an emptyDir the
// replacement started from NOW and skipped the rows published meanwhile.
func TestWorkerPodDeletedMidStreamSkipsNothing(t *testing.T) {
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

	// One worker pod whose file sink sits next to its positions, so that
	// both survive or vanish together.
	const worker = "durable"
	manifest := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: replication.tcprepl.io/v1alpha1
kind: ReplicationWorker
metadata:
  name: %s
spec:
  masterRef:
    name: %s
  replicas: 1
  streams: [%s]
  sink: file:/var/lib/tcprepl-worker/rows.jsonl
`, worker, master, stream)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, ns, manifest); err != nil {
		t.Fatal(err)
	}
	// The worker must be connected before the first row: a worker that has
	// never saved a position starts from the master's current token.
	var first string
	eventually(t, 3*time.Minute, "worker pod connected", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		if len(st.Pods) != 1 || !st.Pods[0].Connected {
			return fmt.Errorf("pods %+v, want one connected", st.Pods)
		}
		first = st.Pods[0].Name
		return nil
	})

	// A publisher writes numbered rows, one batch each, through the pod's
	// deletion and replacement.
	pub := startNumberedPublisher(ctx, env, master, ports)
	t.Cleanup(func() { _, _ = pub.stop() })
	waitPublished := func(n int) {
		eventually(t, 2*time.Minute, fmt.Sprintf("%d rows published", n), func() error {
			got, err := pub.count()
			if err != nil {
				t.Fatal(err)
			}
			if got < n {
				return fmt.Errorf("%d published", got)
			}
			return nil
		})
	}
	waitPublished(10)
	// Pods of the worker as "name uid ready" lines.
	workerPodLines := func() ([]string, error) {
		out, err := env.Kubectl(ctx, "get", "pods", "--namespace", ns, "-l", "app.kubernetes.io/instance="+worker,
			"-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return nil, err
		}
		return strings.Split(strings.TrimSpace(out), "\n"), nil
	}
	lines, err := workerPodLines()
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 {
		t.Fatalf("worker pods %q, want one", lines)
	}
	firstUID := strings.Fields(lines[0])[1]
	if _, err := env.Kubectl(ctx, "delete", "pod", first, "--namespace", ns, "--wait=true", "--timeout=90s"); err != nil {
		t.Fatal(err)
	}
	before, _ := pub.count()
	var second string
	// A StatefulSet's replacement has the deleted pod's name: its status
	// row must not pass for the new pod, so wait for a new pod first.
	eventually(t, 3*time.Minute, "a new, ready worker pod", func() error {
		lines, err := workerPodLines()
		if err != nil {
			return err
		}
		if f := strings.Fields(lines[0]); len(lines) != 1 || len(f) != 3 || f[1] == firstUID || f[2] != "True" {
			return fmt.Errorf("worker pods %q, want one ready pod other than uid %s", lines, firstUID)
		}
		return nil
	})
	eventually(t, 3*time.Minute, "replacement worker pod connected", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		if len(st.Pods) != 1 || !st.Pods[0].Connected {
			return fmt.Errorf("pods %+v, want one connected", st.Pods)
		}
		second = st.Pods[0].Name
		return nil
	})
	waitPublished(before + 10)
	total, err := pub.stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("published %d rows; pod %s deleted after %d, replaced by %s", total, first, before, second)

	eventually(t, 2*time.Minute, "the replacement pod's sink holds every row once, in order", func() error {
		rows, err := sinkRows(ctx, env, second)
		if err != nil {
			return err
		}
		return sameSequence(rows, total)
	})
}

// numberedPublisher publishes rows ["seq", i, "row-i"] for i = 0, 1, ...,
// one batch per row, until stopped.
type numberedPublisher struct {
	stopping chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	mu       sync.Mutex
	n        int
	err      error
}

func startNumberedPublisher(ctx context.Context, env *harness.Env, master string, ports harness.MasterPorts) *numberedPublisher {
	p := &numberedPublisher{stopping: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stopping:
				return
			default:
			}
			i := p.next()
			if _, err := env.Publish(ctx, ns, master, ports, stream, []any{[]any{"seq", i, fmt.Sprintf("row-%d", i)}}); err != nil {
				p.fail(fmt.Errorf("publish row %d: %w", i, err))
				return
			}
			p.published()
		}
	}()
	return p
}

func (p *numberedPublisher) next() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *numberedPublisher) published() {
	p.mu.Lock()
	p.n++
	p.mu.Unlock()
}

func (p *numberedPublisher) fail(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

func (p *numberedPublisher) count() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.err
}

// stop ends publishing between two rows (a publish cut short would leave a
// row that may or may not exist) and returns how many rows the master
// acknowledged.
func (p *numberedPublisher) stop() (int, error) {
	p.stopOnce.Do(func() { close(p.stopping) })
	<-p.done
	return p.count()
}

// sinkRows reads the rows of stream in a worker pod's file sink, from the
// directory the test kubelet keeps the pod's state volume in (a claim's
// directory when the volume is a PersistentVolumeClaim).
func sinkRows(ctx context.Context, env *harness.Env, pod string) ([]json.RawMessage, error) {
	out, err := env.Kubectl(ctx, "get", "pod", pod, "--namespace", ns, "-o", `jsonpath={.spec.volumes[?(@.name=="state")].persistentVolumeClaim.claimName}`)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Kubelet.Dir(), "pods", ns+"_"+pod, "volumes", "state")
	if claim := strings.TrimSpace(out); claim != "" {
		dir = filepath.Join(env.Kubelet.Dir(), "claims", ns, claim)
	}
	f, err := os.Open(filepath.Join(dir, "rows.jsonl"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []json.RawMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Stream string          `json:"stream"`
			Row    json.RawMessage `json:"row"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("sink line %q: %w", sc.Text(), err)
		}
		if line.Stream == stream {
			rows = append(rows, line.Row)
		}
	}
	return rows, sc.Err()
}

// sameSequence checks that rows are exactly ["seq", i, "row-i"] for i in
// 0..n-1, naming the first difference.
func sameSequence(rows []json.RawMessage, n int) error {
	for i, raw := range rows {
		if i >= n {
			return fmt.Errorf("%d rows in the sink, %d published: row %d is %s (duplicated?)", len(rows), n, i, raw)
		}
		var got []any
		if err := json.Unmarshal(raw, &got); err != nil {
			return fmt.Errorf("row %d %s: %w", i, raw, err)
		}
		want := fmt.Sprintf(`["seq",%d,"row-%d"]`, i, i)
		if b, _ := json.Marshal(got); string(b) != want {
			return fmt.Errorf("row %d is %s, want %s (skipped or out of order)", i, b, want)
		}
	}
	if len(rows) < n {
		return fmt.Errorf("%d rows in the sink, %d published: rows from %d on are missing", len(rows), n, len(rows))
	}
	return nil
}
