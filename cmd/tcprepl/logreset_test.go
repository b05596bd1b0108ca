package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// TestWorkerCLIRefusesAResetMasterLog is issue 11 item 1 end to end, with
// the real binaries: a worker saved token 5; the master restarted with an
// empty (ephemeral) log and 8 new rows were published. The worker used to
// resume after token 5 of the new log, so new rows 1-5 never reached it.
// Now it exits naming the log change, and --resync replays the new log.
func TestWorkerCLIRefusesAResetMasterLog(t *testing.T) {
	bin := buildBinary(t)
	const name = "reset.example.org"
	dir := t.TempDir()
	sink := filepath.Join(dir, "rows.jsonl")
	args := func(m *masterProc, extra ...string) []string {
		return append([]string{"--master", m.replAddr, "--server-name", name, "--streams", "typing",
			"--state-dir", filepath.Join(dir, "state"), "--sink", "file:" + sink}, extra...)
	}
	publish := func(m *masterProc, room string, n int) {
		for i := 1; i <= n; i++ {
			if code, body := m.publish(t, "typing", fmt.Sprintf(`{"rows": [["!%s%d:x", ["@a:x"]]]}`, room, i)); code != http.StatusOK {
				t.Fatalf("publish: %d %s", code, body)
			}
		}
	}

	first := startMasterProc(t, bin, "--server-name", name, "--ephemeral")
	publish(first, "old", 5)
	w := startWorkerProc(t, bin, args(first, "--from", "0")...)
	poll(t, "the old log's 5 rows", func() bool { return countFileLines(sink) == 5 })
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	drain(w.logs)
	if err := <-w.done; err != nil {
		t.Fatalf("worker exit after SIGTERM: %v", err)
	}
	if err, logs := first.terminate(t); err != nil {
		t.Fatalf("master exit: %v\n%s", err, strings.Join(logs, "\n"))
	}

	second := startMasterProc(t, bin, "--server-name", name, "--ephemeral") // a new, empty log
	publish(second, "new", 8)
	refused := startWorkerProc(t, bin, args(second)...)
	select {
	case err := <-refused.done:
		if err == nil {
			t.Fatal("the worker exited 0 against another log")
		}
	case <-time.After(30 * time.Second):
		_ = refused.cmd.Process.Kill()
		t.Fatalf("the worker kept running against a reset log; the sink has %d lines", countFileLines(sink))
	}
	logs := drain(refused.logs)
	if all := strings.Join(logs, "\n"); !strings.Contains(all, "the master's log is not the one the saved positions belong to") || !strings.Contains(all, "--resync") {
		t.Fatalf("the worker's exit does not name the log change and the way out:\n%s", all)
	}
	if n := countFileLines(sink); n != 5 {
		t.Fatalf("the sink has %d lines after the refusal, want the old log's 5", n)
	}

	startWorkerProc(t, bin, args(second, "--resync")...)
	poll(t, "the new log replayed", func() bool { return countFileLines(sink) == 13 })
	data, err := os.ReadFile(sink)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i, l := range lines[5:] {
		var line struct {
			Token int64             `json:"token"`
			Row   []json.RawMessage `json:"row"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil || len(line.Row) == 0 {
			t.Fatalf("line %q: %v", l, err)
		}
		if want := fmt.Sprintf(`"!new%d:x"`, i+1); line.Token != int64(i+1) || string(line.Row[0]) != want {
			t.Fatalf("line %d of the new log: token %d row %s, want token %d row %s", i+1, line.Token, line.Row[0], i+1, want)
		}
	}
}

func TestWorkerLogChangeFlags(t *testing.T) {
	tests := map[string]struct {
		args             []string
		resync, onChange bool
		wantErr          string
	}{
		"default stops":        {args: nil},
		"resync once":          {args: []string{"--resync"}, resync: true},
		"resync on log change": {args: []string{"--on-log-change", "resync"}, onChange: true},
		"unknown policy":       {args: []string{"--on-log-change", "ignore"}, wantErr: "use stop or resync"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var f workerFlags
			cmd := &cobra.Command{}
			f.addFlags(cmd.Flags())
			if err := cmd.ParseFlags(append([]string{"--master", "m:1", "--server-name", "n", "--streams", "caches", "--state-dir", "/s"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			cfg, err := f.config(cmd, func(string) string { return "" })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("config: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.Resync != tc.resync || cfg.ResyncOnLogChange != tc.onChange {
				t.Fatalf("config %+v, %v", cfg, err)
			}
		})
	}
}
