package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/worker"
)

func TestWorkerFlagsConfig(t *testing.T) {
	env := map[string]string{envMasterAddress: "env-master:9092", envServerName: "env.example.org", envWorkerName: "pod-0"}
	getenv := func(k string) string { return env[k] }
	parse := func(t *testing.T, args ...string) (worker.Config, error) {
		var f workerFlags
		cmd := &cobra.Command{}
		f.addFlags(cmd.Flags())
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return f.config(cmd, getenv)
	}
	cfg, err := parse(t, "--streams", "events, caches", "--state-dir", "/s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "env-master:9092" || cfg.ServerName != "env.example.org" || cfg.Name != "pod-0" ||
		strings.Join(cfg.Streams, "|") != "events|caches" || cfg.From != nil || cfg.Sink != "stdout" || cfg.SaveInterval != 100*time.Millisecond || cfg.KeepHeartbeats {
		t.Fatalf("from the environment: %+v", cfg)
	}
	cfg, err = parse(t, "--master", "m:1", "--server-name", "n", "--name", "w", "--streams", "ALL", "--state-dir", "/s", "--from", "0", "--sink", "file:/x", "--keep-heartbeats")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "m:1" || cfg.ServerName != "n" || cfg.Name != "w" || cfg.From == nil || *cfg.From != 0 || cfg.Sink != "file:/x" || !cfg.KeepHeartbeats {
		t.Fatalf("from flags: %+v", cfg)
	}
	if _, err := parse(t, "--streams", "events"); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Fatalf("no state dir: err = %v", err)
	}
	if _, err := parse(t, "--streams", "events", "--state-dir", "/s", "--save-interval", "0s"); err == nil || !strings.Contains(err.Error(), "--save-interval") {
		t.Fatalf("zero save interval: err = %v", err)
	}
}

// workerProc is `tcprepl worker` running as a child process.
type workerProc struct {
	cmd        *exec.Cmd
	metricsURL string
	logs       chan string
	done       chan error
}

func startWorkerProc(t *testing.T, bin string, args ...string) *workerProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"worker", "--metrics-listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProc{cmd: cmd, logs: make(chan string, 1000), done: make(chan error, 1)}
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) == nil && ev["msg"] == "worker metrics serving" {
				serving <- ev["metrics"].(string)
			}
			select {
			case p.logs <- line:
			default:
			}
		}
		close(p.logs)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case addr := <-serving:
		p.metricsURL = "http://" + addr
	case err := <-p.done:
		t.Fatalf("worker exited: %v: %s", err, strings.Join(drain(p.logs), "\n"))
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not log that it serves metrics")
	}
	return p
}

func drain(c chan string) []string {
	var out []string
	for l := range c {
		out = append(out, l)
	}
	return out
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func countFileLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWorkerCLI runs `tcprepl worker` against `tcprepl master`: rows
// published over HTTP land in the file sink, /readyz turns ready, SIGTERM
// stops it cleanly, and a restart resumes without repeating rows. The probe
// CLI lists the worker with its name from the environment.
func TestWorkerCLI(t *testing.T) {
	bin := buildBinary(t)
	m := startMasterProc(t, bin, "--server-name", "cli.example.org", "--ephemeral")
	dir := t.TempDir()
	sink := filepath.Join(dir, "rows.jsonl")
	args := []string{"--master", m.replAddr, "--server-name", "cli.example.org", "--streams", "typing",
		"--state-dir", filepath.Join(dir, "state"), "--sink", "file:" + sink, "--from", "0"}
	publish := func(n int) {
		for i := range n {
			code, body := m.publish(t, "typing", fmt.Sprintf(`{"rows": [["!r%d:x", ["@a:x"]]]}`, i))
			if code != http.StatusOK {
				t.Fatalf("publish: %d %s", code, body)
			}
		}
	}
	publish(3)
	w := startWorkerProc(t, bin, args...)
	poll(t, "the rows in the file", func() bool { return countFileLines(sink) == 3 })
	poll(t, "/readyz 200", func() bool { return httpStatus(w.metricsURL+"/readyz") == http.StatusOK })
	if code := httpStatus(w.metricsURL + "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}

	out, errOut, code := runCLI(t, bin, "probe", "--master", m.replAddr, "--server-name", "cli.example.org", "--http", m.httpURL)
	if code != 0 || strings.Contains(out, "None.") {
		t.Fatalf("probe exit %d: %s\n%s", code, errOut, out)
	}

	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	logs := drain(w.logs)
	if err := <-w.done; err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, strings.Join(logs, "\n"))
	}
	publish(2) // while the worker is down
	startWorkerProc(t, bin, args...)
	poll(t, "the rows published while down, once", func() bool { return countFileLines(sink) == 5 })
}

func TestWorkerCLIErrors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	_, errOut, code := runCLI(t, bin, "worker", "--master", "127.0.0.1:1", "--server-name", "x", "--streams", "events", "--state-dir", dir, "--sink", "kafka:x")
	if code == 0 || !strings.Contains(errOut, "use stdout, file:PATH or http:URL") {
		t.Fatalf("bad sink: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = runCLI(t, bin, "worker", "--server-name", "x", "--streams", "events", "--state-dir", dir)
	if code == 0 || !strings.Contains(errOut, "TCPREPL_MASTER_ADDRESS") {
		t.Fatalf("no master: exit %d, stderr %q", code, errOut)
	}
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestWorkerSurvivesMasterRestart restarts a durable `tcprepl master` on the
// same addresses under a running `tcprepl worker`: the worker reconnects,
// resumes from its position and the file sink holds every row once.
func TestWorkerSurvivesMasterRestart(t *testing.T) {
	bin := buildBinary(t)
	replAddr, httpAddr := freeAddr(t), freeAddr(t)
	masterArgs := []string{"--server-name", "cli.example.org", "--data-dir", t.TempDir(),
		"--replication-listen", replAddr, "--http-listen", httpAddr}
	m := startMasterProc(t, bin, masterArgs...)
	dir := t.TempDir()
	sink := filepath.Join(dir, "rows.jsonl")
	w := startWorkerProc(t, bin, "--master", replAddr, "--server-name", "cli.example.org", "--streams", "typing",
		"--state-dir", filepath.Join(dir, "state"), "--sink", "file:"+sink, "--from", "0", "--name", "worker-0")
	publish := func(m *masterProc, from, n int) {
		for i := from; i < from+n; i++ {
			if code, body := m.publish(t, "typing", fmt.Sprintf(`{"rows": [["!r%d:x", []]]}`, i)); code != http.StatusOK {
				t.Fatalf("publish: %d %s", code, body)
			}
		}
	}
	publish(m, 0, 5)
	poll(t, "5 rows", func() bool { return countFileLines(sink) == 5 })
	if err, logs := m.terminate(t); err != nil {
		t.Fatalf("master exit: %v\n%s", err, strings.Join(logs, "\n"))
	}
	poll(t, "/readyz 503 while the master is down", func() bool { return httpStatus(w.metricsURL+"/readyz") == http.StatusServiceUnavailable })
	m = startMasterProc(t, bin, masterArgs...)
	poll(t, "/readyz 200 after the restart", func() bool { return httpStatus(w.metricsURL+"/readyz") == http.StatusOK })
	publish(m, 5, 5)
	poll(t, "10 rows", func() bool { return countFileLines(sink) == 10 })
	b, err := os.ReadFile(sink)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var l worker.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l.Token != int64(i+1) || !strings.Contains(string(l.Row), fmt.Sprintf(`"!r%d:x"`, i)) {
			t.Fatalf("line %d = %s: want token %d holding row %d once, in order", i, line, i+1, i)
		}
	}
}
