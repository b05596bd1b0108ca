package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// buildBinary builds tcprepl once per test run.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tcprepl-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tcprepl")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", errors.New("go build: " + err.Error() + ": " + string(out))
	}
	return bin, nil
})

func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// masterProc is `tcprepl master` running as a child process.
type masterProc struct {
	cmd      *exec.Cmd
	httpURL  string
	replAddr string
	logs     chan string // every stderr line
	done     chan error
}

// startMasterProc starts the binary with listen addresses on port 0 and
// reads the real addresses from its "master serving" log line.
func startMasterProc(t *testing.T, bin string, args ...string) *masterProc {
	t.Helper()
	args = append([]string{"master", "--replication-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &masterProc{cmd: cmd, logs: make(chan string, 1000), done: make(chan error, 1)}
	serving := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) == nil && ev["msg"] == "master serving" {
				serving <- ev
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
	case ev := <-serving:
		p.httpURL = "http://" + ev["http"].(string)
		p.replAddr = ev["replication"].(string)
	case <-time.After(60 * time.Second):
		t.Fatal("master did not log that it is serving")
	}
	return p
}

func (p *masterProc) publish(t *testing.T, stream, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(p.httpURL+"/v1/streams/"+stream+"/rows", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// terminate sends SIGTERM and returns the exit error and every log line.
// Other tests of this package use it with this signature.
func (p *masterProc) terminate(t *testing.T) (error, []string) { //nolint:staticcheck // ST1008: signature shared with worker_test.go

	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range p.logs {
		lines = append(lines, l)
	}
	select {
	case err := <-p.done:
		return err, lines
	case <-time.After(30 * time.Second):
		t.Fatal("master did not exit after SIGTERM")
		return nil, nil
	}
}

func TestMasterProcessPublishSIGTERMRestart(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	p := startMasterProc(t, bin, "--server-name", "hs.cli", "--data-dir", dir)
	for i, want := range []string{`{"token":1}`, `{"token":2}`} {
		code, body := p.publish(t, "caches", `{"rows": [["get_user_by_id", ["@a:x"], 1]]}`)
		if code != 200 || strings.TrimSpace(body) != want {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	err, lines := p.terminate(t)
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v (want status 0); logs:\n%s", err, strings.Join(lines, "\n"))
	}
	if !strings.Contains(strings.Join(lines, "\n"), "log flushed") {
		t.Fatalf("no flush in the logs:\n%s", strings.Join(lines, "\n"))
	}

	// Same data dir: the tokens continue.
	p = startMasterProc(t, bin, "--server-name", "hs.cli", "--data-dir", dir)
	if code, body := p.publish(t, "caches", `{"rows": [["f", [], 3]]}`); code != 200 || strings.TrimSpace(body) != `{"token":3}` {
		t.Fatalf("after restart: %d %s", code, body)
	}
	if err, _ := p.terminate(t); err != nil {
		t.Fatalf("second exit: %v", err)
	}
}

// collector is a replication client handler that keeps every batch by token.
type collector struct {
	mu      sync.Mutex
	batches map[int64][]string
	order   []int64
	pos     int64
}

func (c *collector) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		c.batches[token] = append(c.batches[token], string(r))
	}
	c.order = append(c.order, token)
	return nil
}
func (c *collector) HandlePosition(_ string, token int64) {
	c.mu.Lock()
	c.pos = token
	c.mu.Unlock()
}
func (c *collector) HandleConnectionState(replication.ClientState, error) {}

// TestMasterProcessKill9MidPublish: SIGKILL while publishers are busy;
// after a restart every acknowledged row is there, exactly once, under the
// token it was acknowledged with, and tokens continue.
func TestMasterProcessKill9MidPublish(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	p := startMasterProc(t, bin, "--server-name", "hs.cli", "--data-dir", dir)
	var (
		mu    sync.Mutex
		acked = map[int64]string{}
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				row := fmt.Sprintf(`["f", ["w%d-%d"], 1]`, w, n)
				resp, err := http.Post(p.httpURL+"/v1/streams/caches/rows", "application/json", strings.NewReader(`{"rows": [`+row+`]}`))
				if err != nil {
					return // the master is gone
				}
				var out struct{ Token int64 }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					return
				}
				mu.Lock()
				acked[out.Token] = row
				mu.Unlock()
			}
		})
	}
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d publishes acknowledged in a minute", n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	for range p.logs {
	}
	// Killed: the exit status is the signal's, which is the point.
	if err := <-p.done; err == nil {
		t.Fatal("master exited cleanly from SIGKILL")
	}

	p = startMasterProc(t, bin, "--server-name", "hs.cli", "--data-dir", dir)
	c := &collector{batches: map[int64][]string{}, pos: -1}
	client, err := replication.NewClient(replication.ClientConfig{Address: p.replAddr, ServerName: "hs.cli", Name: "checker",
		Streams: []replication.StreamRequest{{Stream: "caches", Token: 0}}, Handler: c})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("client Run: %v", err)
		}
	}()
	deadline = time.Now().Add(time.Minute)
	for {
		c.mu.Lock()
		pos := c.pos
		c.mu.Unlock()
		if pos >= 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no POSITION after restart")
		}
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	for tok, row := range acked {
		if got := c.batches[tok]; len(got) != 1 || got[0] != row {
			t.Fatalf("acknowledged token %d (%s) after restart: %q", tok, row, got)
		}
	}
	// Every token from 1 to the position, once, in order: nothing lost or
	// duplicated (rows in flight at the kill may be there unacknowledged).
	if int64(len(c.order)) != c.pos {
		t.Fatalf("%d batches for position %d", len(c.order), c.pos)
	}
	for i, tok := range c.order {
		if tok != int64(i+1) {
			t.Fatalf("token %d at position %d", tok, i)
		}
	}
	if code, body := p.publish(t, "caches", `{"rows": [["f", [], 2]]}`); code != 200 || strings.TrimSpace(body) != fmt.Sprintf(`{"token":%d}`, c.pos+1) {
		t.Fatalf("publish after restart: %d %s, want token %d", code, body, c.pos+1)
	}
}

func TestMasterProcessConfigFileAndToken(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	cfgFile := filepath.Join(dir, "master.yaml")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := "serverName: from-file\nephemeral: true\ncustomStreams: [{name: pairs, fields: 2}]\npublishTokenFile: " + tokenFile + "\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// --server-name on the command line wins over the file.
	p := startMasterProc(t, bin, "--config", cfgFile, "--server-name", "from-flag")
	if code, _ := p.publish(t, "pairs", `{"rows": [[1, 2]]}`); code != 401 {
		t.Fatalf("publish without token: %d, want 401", code)
	}
	req, _ := http.NewRequest("POST", p.httpURL+"/v1/streams/pairs/rows", strings.NewReader(`{"rows": [[1]]}`))
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "2") {
		t.Fatalf("row with 1 of 2 fields: %d %s", resp.StatusCode, b)
	}
	var streams struct{ ServerName string }
	resp, err = http.Get(p.httpURL + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&streams)
	resp.Body.Close()
	if streams.ServerName != "from-flag" {
		t.Fatalf("server name %q, want the flag's", streams.ServerName)
	}
	if err, _ := p.terminate(t); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

func TestMasterCommandErrors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("serverName: x\nretention: {nope: {maxRows: 1}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no server name", []string{"master", "--ephemeral"}, "serverName is required"},
		{"missing config", []string{"master", "--config", filepath.Join(dir, "none.yaml")}, "read config file"},
		{"bad config", []string{"master", "--config", bad}, `retention for "nope"`},
		{"bad custom stream", []string{"master", "--server-name", "x", "--custom-stream", "a:b"}, "field count"},
		{"bad listen address", []string{"master", "--server-name", "x", "--http-listen", "256.0.0.1:1"}, "listen for HTTP"},
		{"unknown log backend", []string{"master", "--server-name", "x", "--log", "sqlite"}, `log.backend "sqlite" is unknown`},
		{"postgres with a data dir", []string{"master", "--server-name", "x", "--log", "postgres", "--data-dir", dir}, "dataDir and ephemeral are for the Pebble log"},
		{"postgres DSN file missing", []string{"master", "--server-name", "x", "--log", "postgres", "--postgres-dsn-file", filepath.Join(dir, "none")}, "read PostgreSQL DSN file"},
		{"TLS key without certificate", []string{"master", "--server-name", "x", "--tls-key-file", "k.pem"}, "certFile and keyFile go together"},
		{"client CA without TLS", []string{"master", "--server-name", "x", "--tls-client-ca-file", "ca.pem"}, "need TLS"},
		{"missing certificate file", []string{"master", "--server-name", "x", "--tls-cert-file", filepath.Join(dir, "none.pem"), "--tls-key-file", filepath.Join(dir, "none.pem")}, "tls: stat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args, "--replication-listen", "127.0.0.1:0")
			out, err := exec.Command(bin, args...).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("err %v, want exit status 1; output %s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output %s lacks %q", out, tc.want)
			}
		})
	}
}
