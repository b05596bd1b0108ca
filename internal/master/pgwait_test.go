package master

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/pgtest"
)

func pgConfig(t *testing.T, dsn string) masterapi.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(path, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return masterapi.Config{ServerName: "hs.example", Log: masterapi.LogConfig{Backend: masterapi.LogPostgres, PostgresDSNFile: path}}.WithDefaults()
}

type waitResult struct {
	log StreamLog
	err error
}

// startWaiting runs WaitForPostgresLog on a loopback listener and returns
// its HTTP address and result.
func startWaiting(t *testing.T, ctx context.Context, cfg masterapi.Config) (string, <-chan waitResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan waitResult, 1)
	go func() {
		l, err := WaitForPostgresLog(ctx, cfg, ln, logr.Discard(), nil)
		done <- waitResult{l, err}
	}()
	return "http://" + ln.Addr().String(), done
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReadyz polls /readyz until its reason mentions want.
func waitReadyz(t *testing.T, base, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(base + "/readyz")
		var e apiError
		if code == http.StatusServiceUnavailable && json.Unmarshal([]byte(body), &e) == nil && strings.Contains(e.Error, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s; want 503 mentioning %q", code, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPostgresDownAtStartWaitsNotReady: with the database down the master
// is alive (/healthz 200) but not ready (/readyz 503 with the reason), keeps
// retrying, and opens the log once the database is back.
func TestPostgresDownAtStartWaitsNotReady(t *testing.T) {
	srv := pgtest.Start(t)
	cfg := pgConfig(t, srv.NewDatabase(t))
	srv.Stop()
	base, done := startWaiting(t, context.Background(), cfg)
	waitReadyz(t, base, "connect to PostgreSQL at 127.0.0.1")
	waitReadyz(t, base, "(attempt 2,")
	if code, body := get(base + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while waiting = %d %s, want 200 (alive, no restart)", code, body)
	}
	srv.Restart(t)
	var r waitResult
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the log did not open within 60s of the database coming back")
	}
	if r.err != nil {
		t.Fatalf("WaitForPostgresLog: %v", r.err)
	}
	defer func() { _ = r.log.Close() }()
	// The waiting listener is released for the master's own.
	if code, _ := get(base + "/readyz"); code != 0 {
		t.Fatalf("the waiting server still answers (%d) after the log opened", code)
	}
	m, err := New(cfg, Options{Log: r.log, Logger: logr.Discard()})
	if err != nil {
		t.Fatalf("New with the PostgreSQL log: %v", err)
	}
	if _, err := m.store.AppendEncoded(context.Background(), "caches", rowsFromStrings(`["f", ["k"], 1]`)); err != nil {
		t.Fatalf("append through the master's log: %v", err)
	}
}

func rowsFromStrings(vals ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(vals))
	for i, v := range vals {
		out[i] = json.RawMessage(v)
	}
	return out
}

// TestPostgresRoleWithoutCreateSaysWhatToGrant: a role that may not create
// the tables keeps the master not ready with the grant to run, until it is
// stopped.
func TestPostgresRoleWithoutCreateSaysWhatToGrant(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	name := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	srv.Exec(t, `CREATE ROLE tcprepl_noperm LOGIN`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// PostgreSQL 15 already denies CREATE on public to other roles; revoke
	// it for older servers too.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `REVOKE CREATE ON SCHEMA public FROM PUBLIC`); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	base, done := startWaiting(t, ctx, pgConfig(t, srv.DSNAs("tcprepl_noperm", name)))
	waitReadyz(t, base, "GRANT CREATE, USAGE ON SCHEMA public TO")
	cancel()
	r := <-done
	if r.err == nil || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("after cancel: %v, want context.Canceled", r.err)
	}
}

func TestPostgresWithoutDSNFailsAtOnce(t *testing.T) {
	t.Setenv(masterapi.PostgresDSNEnv, "")
	cfg := masterapi.Config{ServerName: "hs.example", Log: masterapi.LogConfig{Backend: masterapi.LogPostgres}}.WithDefaults()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WaitForPostgresLog(context.Background(), cfg, ln, logr.Discard(), nil); err == nil || !strings.Contains(err.Error(), masterapi.PostgresDSNEnv) {
		t.Fatalf("no DSN: %v, want an error naming %s", err, masterapi.PostgresDSNEnv)
	}
	if _, err := New(cfg, Options{Logger: logr.Discard()}); err == nil || !strings.Contains(err.Error(), "WaitForPostgresLog") {
		t.Fatalf("New opening the PostgreSQL log itself: %v", err)
	}
}

// TestPgOptionsCommitConnections: log.commitConnections reaches the
// PostgreSQL log, and the config's bound is the log's own.
func TestPgOptionsCommitConnections(t *testing.T) {
	if masterapi.MaxCommitConnections != pglog.MaxCommitConnections {
		t.Fatalf("masterapi.MaxCommitConnections = %d, pglog.MaxCommitConnections = %d: the config would allow what the log's takeover cannot search", masterapi.MaxCommitConnections, pglog.MaxCommitConnections)
	}
	for name, tc := range map[string]struct {
		set  int
		want int
	}{
		"unset": {0, 1},
		"four":  {4, 4},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := masterapi.Config{ServerName: "hs.example", Log: masterapi.LogConfig{Backend: masterapi.LogPostgres, CommitConnections: tc.set}}.WithDefaults()
			if got := pgOptions(cfg, "postgres://x", logr.Discard(), time.Now).CommitConnections; got != tc.want {
				t.Fatalf("CommitConnections = %d, want %d", got, tc.want)
			}
		})
	}
}
