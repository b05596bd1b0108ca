package main

import (
	"bufio"
	"encoding/json"
	"errors"
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
func (p *masterProc) terminate(t *testing.T) (error, []string) {
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
