package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestMasterProcessOnPostgres: `tcprepl master --log postgres` publishes,
// shuts down on SIGTERM and, restarted on the same database (the DSN from
// the environment this time), continues the tokens.
func TestMasterProcessOnPostgres(t *testing.T) {
	bin := buildBinary(t)
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startMasterProc(t, bin, "--server-name", "hs.cli", "--log", "postgres", "--postgres-dsn-file", dsnFile)
	for i, want := range []string{`{"token":1}`, `{"token":2}`} {
		code, body := p.publish(t, "caches", `{"rows": [["get_user_by_id", ["@a:x"], 1]]}`)
		if code != 200 || strings.TrimSpace(body) != want {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	if err, lines := p.terminate(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v (want status 0); logs:\n%s", err, strings.Join(lines, "\n"))
	}
	t.Setenv("TCPREPL_POSTGRES_DSN", dsn)
	p = startMasterProc(t, bin, "--server-name", "hs.cli", "--log", "postgres")
	if code, body := p.publish(t, "caches", `{"rows": [["f", [], 3]]}`); code != 200 || strings.TrimSpace(body) != `{"token":3}` {
		t.Fatalf("after restart: %d %s", code, body)
	}
	if err, _ := p.terminate(t); err != nil {
		t.Fatalf("second exit: %v", err)
	}
}
