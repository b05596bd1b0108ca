package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestMasterMigratePebbleToPostgres moves a master from Pebble to
// PostgreSQL with the real binaries: a worker saved its position on the
// Pebble log, more rows were published while it was away, the log was
// migrated and the master restarted on PostgreSQL. The worker resumes: it
// receives every row exactly once, in order, and does not take the
// migrated log for a new one.
func TestMasterMigratePebbleToPostgres(t *testing.T) {
	bin := buildBinary(t)
	srv := pgtest.Start(t)
	const name = "migrate.example.org"
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "pebble")
	sink := filepath.Join(dir, "rows.jsonl")
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(srv.NewDatabase(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	workerArgs := func(m *masterProc, extra ...string) []string {
		return append([]string{"--master", m.replAddr, "--server-name", name, "--streams", "typing",
			"--state-dir", filepath.Join(dir, "state"), "--sink", "file:" + sink}, extra...)
	}
	next := 1
	publish := func(m *masterProc, n int) {
		for range n {
			if code, body := m.publish(t, "typing", fmt.Sprintf(`{"rows": [["!r%d:x", ["@a:x"]]]}`, next)); code != http.StatusOK || strings.TrimSpace(body) != fmt.Sprintf(`{"token":%d}`, next) {
				t.Fatalf("publish row %d: %d %s", next, code, body)
			}
			next++
		}
	}
	stopWorker := func(w *workerProc) {
		if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		drain(w.logs)
		if err := <-w.done; err != nil {
			t.Fatalf("worker exit after SIGTERM: %v", err)
		}
	}

	pebble := startMasterProc(t, bin, "--server-name", name, "--data-dir", dataDir)
	publish(pebble, 5)
	w := startWorkerProc(t, bin, workerArgs(pebble, "--from", "0")...)
	poll(t, "the first 5 rows", func() bool { return countFileLines(sink) == 5 })
	stopWorker(w)
	publish(pebble, 3) // tokens 6-8: only in the Pebble log when it is migrated
	if err, logs := pebble.terminate(t); err != nil {
		t.Fatalf("Pebble master exit: %v\n%s", err, strings.Join(logs, "\n"))
	}

	migrate := func() (string, error) {
		out, err := exec.Command(bin, "master", "migrate", "--server-name", name, "--data-dir", dataDir, "--postgres-dsn-file", dsnFile).CombinedOutput()
		return string(out), err
	}
	out, err := migrate()
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "typing") || !strings.Contains(out, "1-8") {
		t.Fatalf("migrate does not report typing's tokens 1-8:\n%s", out)
	}
	if out, err := migrate(); err == nil || !strings.Contains(out, "already holds a stream log") {
		t.Fatalf("a second migrate into the same database: %v\n%s", err, out)
	}

	pg := startMasterProc(t, bin, "--server-name", name, "--log", "postgres", "--postgres-dsn-file", dsnFile)
	publish(pg, 2) // tokens 9 and 10: the PostgreSQL log continues the tokens
	w = startWorkerProc(t, bin, workerArgs(pg)...)
	poll(t, "all 10 rows", func() bool { return countFileLines(sink) >= 10 })
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive now
	stopWorker(w)
	if err, logs := pg.terminate(t); err != nil {
		t.Fatalf("PostgreSQL master exit: %v\n%s", err, strings.Join(logs, "\n"))
	}
	data, err := os.ReadFile(sink)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 10 {
		t.Fatalf("the sink has %d rows, want 10 (each once):\n%s", len(lines), data)
	}
	for i, l := range lines {
		var line struct {
			Token int64             `json:"token"`
			Row   []json.RawMessage `json:"row"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil || len(line.Row) == 0 {
			t.Fatalf("line %q: %v", l, err)
		}
		if want := fmt.Sprintf(`"!r%d:x"`, i+1); line.Token != int64(i+1) || string(line.Row[0]) != want {
			t.Fatalf("row %d: token %d %s, want token %d %s", i+1, line.Token, line.Row[0], i+1, want)
		}
	}
}

// TestMigrateCommandErrors: what migrate refuses before it touches a
// database.
func TestMigrateCommandErrors(t *testing.T) {
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte("postgres://postgres@127.0.0.1:1/x?connect_timeout=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args []string
		want string
	}{
		"no server name":      {args: []string{"--data-dir", dir}, want: "no server name"},
		"no data dir":         {args: []string{"--server-name", "hs"}, want: "--data-dir"},
		"no DSN":              {args: []string{"--server-name", "hs", "--data-dir", dir}, want: "no target database"},
		"database down":       {args: []string{"--server-name", "hs", "--data-dir", filepath.Join(dir, "log"), "--postgres-dsn-file", dsnFile}, want: "connect to PostgreSQL"},
		"bad custom stream":   {args: []string{"--server-name", "hs", "--data-dir", dir, "--custom-stream", "Bad Name"}, want: "Bad Name"},
		"missing config file": {args: []string{"--config", filepath.Join(dir, "nope.yaml")}, want: "read config file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv("TCPREPL_POSTGRES_DSN", "")
			cmd := newMigrateCommand()
			cmd.SetArgs(tc.args)
			cmd.SetOut(new(strings.Builder))
			cmd.SetErr(new(strings.Builder))
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("migrate %v: %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}
