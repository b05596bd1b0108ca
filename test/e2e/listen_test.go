package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/internal/proc"
)

// TestBracketedListenAddresses runs the real master and worker processes
// with listen addresses in the form the operator gives them,
// [$(POD_IP)]:PORT expanded: a bracketed IPv4 address (what every pod of the
// test kubelet gets) and, when this machine has one, the IPv6 loopback
// [::1]. Each must listen there, say so in its log, serve its HTTP endpoints
// and replicate: the worker reaches the master at the bracketed address, and
// a row published to the master's bracketed HTTP address reaches its sink.
func TestBracketedListenAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs the master and worker processes (not in -short)")
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := cluster.LookBinary("TCPREPL_BINARY", filepath.Join(root, "bin", "tcprepl"))
	cluster.SkipOrFail(t, err)

	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			if ln, err := net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
				t.Skipf("no %s on this machine: %v", host, err)
			} else {
				_ = ln.Close()
			}
			listen := "[" + host + "]:0"
			dir := t.TempDir()

			masterLog := startLogged(t, dir, "master", bin, "master", "--server-name=brackets.test", "--ephemeral",
				"--replication-listen="+listen, "--http-listen="+listen)
			serving := waitLogLine(t, masterLog, "master serving")
			repl, httpAddr := logString(t, serving, "replication"), logString(t, serving, "http")
			checkHost(t, "master replication", repl, host)
			checkHost(t, "master http", httpAddr, host)
			eventually(t, 10*time.Second, "master /readyz at "+httpAddr, func() error { return get("http://" + httpAddr + "/readyz") })

			workerLog := startLogged(t, dir, "worker", bin, "worker", "--master="+repl, "--server-name=brackets.test",
				"--name=brackets-worker", "--streams=ALL", "--state-dir="+filepath.Join(dir, "state"),
				"--sink=file:"+filepath.Join(dir, "rows.jsonl"), "--metrics-listen="+listen)
			metrics := logString(t, waitLogLine(t, workerLog, "worker metrics serving"), "metrics")
			checkHost(t, "worker metrics", metrics, host)
			getOK(t, "http://"+metrics+"/healthz")
			// Ready once connected and caught up with the master, which it
			// reached at the bracketed address.
			eventually(t, 30*time.Second, "worker /readyz at "+metrics, func() error { return get("http://" + metrics + "/readyz") })
			body, err := scrape("http://" + metrics + "/metrics")
			if err != nil || !strings.Contains(body, "tcprepl_worker_caught_up 1") {
				t.Errorf("worker /metrics: %v, lacks tcprepl_worker_caught_up 1:\n%.2000s", err, body)
			}
			// The master's connection table has the worker, from an address
			// of the same family.
			eventually(t, 10*time.Second, "the worker in the master's connection table", func() error {
				body, err := scrape("http://" + httpAddr + "/v1/connections")
				if err != nil {
					return err
				}
				if !strings.Contains(body, "brackets-worker") {
					return fmt.Errorf("no brackets-worker in %s", body)
				}
				return nil
			})
			// And it replicates: a row published to the master at its
			// bracketed HTTP address reaches the worker's sink whole, with
			// the token the master gave it.
			row := []any{"!room:brackets.test", []any{"@" + host + ":brackets.test"}}
			tok := publishRow(t, "http://"+httpAddr, "typing", row)
			eventually(t, 30*time.Second, "the published row in the worker's sink", func() error {
				return sinkHasRow(filepath.Join(dir, "rows.jsonl"), "typing", tok, row)
			})
		})
	}
}

// publishRow publishes one row to a master's HTTP API and returns its
// token.
func publishRow(t *testing.T, baseURL, stream string, row any) int64 {
	t.Helper()
	body, err := json.Marshal(map[string]any{"rows": []any{row}})
	if err != nil {
		t.Fatal(err)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(baseURL+"/v1/streams/"+stream+"/rows", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Token int64 `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Token <= 0 {
		t.Fatalf("publish: %s, token %d, %v", resp.Status, out.Token, err)
	}
	return out.Token
}

// sinkHasRow checks that a file sink holds row as the whole batch of token
// on stream.
func sinkHasRow(path, stream string, token int64, row any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	want, err := json.Marshal(row)
	if err != nil {
		return err
	}
	var wantRow any
	if err := json.Unmarshal(want, &wantRow); err != nil {
		return err
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		var line sinkLine
		if json.Unmarshal(l, &line) != nil || line.Stream != stream || line.Token != token {
			continue
		}
		var got any
		if err := json.Unmarshal(line.Row, &got); err != nil {
			return fmt.Errorf("sink row of token %d: %w", token, err)
		}
		if line.Index != 0 || line.Count != 1 || !reflect.DeepEqual(got, wantRow) {
			return fmt.Errorf("sink holds token %d as %s [%d/%d], want %s [0/1]", token, line.Row, line.Index, line.Count, want)
		}
		return nil
	}
	return fmt.Errorf("no %s token %d in the sink yet:\n%s", stream, token, b)
}

// startLogged starts bin with args, its stderr (the JSON log) in a file,
// and stops it when the test ends.
func startLogged(t *testing.T, dir, name, bin string, args ...string) string {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	p, err := proc.Start(name, cmd)
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Logf("stop %s: %v", name, err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return logPath
}

// waitLogLine returns the first JSON log line of the file whose msg is msg.
func waitLogLine(t *testing.T, path, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 20*time.Second, fmt.Sprintf("%q in %s", msg, filepath.Base(path)), func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
				found = line
				return nil
			}
		}
		return fmt.Errorf("not logged yet; log so far:\n%s", b)
	})
	return found
}

func logString(t *testing.T, line map[string]any, key string) string {
	t.Helper()
	s, ok := line[key].(string)
	if !ok || s == "" {
		t.Fatalf("log line %v has no %s", line, key)
	}
	return s
}

// checkHost checks that addr is a host:port on host with a real port.
func checkHost(t *testing.T, what, addr, host string) {
	t.Helper()
	h, port, err := net.SplitHostPort(addr)
	if err != nil || h != host || port == "0" || port == "" {
		t.Fatalf("%s listens on %q (host %q, port %q, %v), want %s with a port", what, addr, h, port, err, host)
	}
}

func get(url string) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func getOK(t *testing.T, url string) {
	t.Helper()
	if err := get(url); err != nil {
		t.Fatal(err)
	}
}
