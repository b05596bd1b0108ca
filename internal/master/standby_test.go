package master

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestStandbyServesRoleAndRefusesWork: while another master holds the log,
// a standby answers /readyz 503 with role standby and the reason, refuses
// publishes with 503 (nothing stored), exports tcprepl_master_active 0,
// answers replication connections with an ERROR line; and it takes the log
// over within a poll or two once the active master stops.
func TestStandbyServesRoleAndRefusesWork(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	cfg := pgConfig(t, dsn)
	active, err := pglog.Open(context.Background(), pgOptions(cfg, dsn, logr.Discard(), nil))
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan waitResult, 1)
	go func() {
		l, err := WaitAsStandby(ctx, cfg, StandbyOptions{HTTP: httpLn, Replication: []net.Listener{replLn}, Registry: NewStandbyRegistry(), Logger: logr.Discard()})
		done <- waitResult{l, err}
	}()
	base := "http://" + httpLn.Addr().String()
	waitReadyz(t, base, "holds the lease until")
	for name, tc := range map[string]struct {
		method, path string
		code         int
		want         string
		// closes: the reply ends the keep-alive connection, so a client
		// that reached the standby through a Service reconnects to
		// wherever the Service routes now instead of sticking here.
		closes bool
	}{
		"readyz":  {"GET", "/readyz", 503, `"role":"standby"`, true},
		"healthz": {"GET", "/healthz", 200, `"role":"standby"`, false},
		"publish": {"POST", "/v1/streams/caches/rows", 503, "this master is a standby, nothing stored", true},
		"metrics": {"GET", "/metrics", 200, "\ntcprepl_master_active 0\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(`{"rows": [["f", ["k"], 1]]}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Fatalf("%s %s = %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.want)
			}
			if resp.Close != tc.closes {
				t.Errorf("%s %s: the reply closes the connection: %v, want %v", tc.method, tc.path, resp.Close, tc.closes)
			}
		})
	}
	c, err := net.Dial("tcp", replLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	_ = c.Close()
	if line != standbyReplicationError {
		t.Fatalf("replication connection to a standby got %q, want %q", line, standbyReplicationError)
	}
	closedAt := time.Now()
	if err := active.Close(); err != nil {
		t.Fatal(err)
	}
	var r waitResult
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the standby did not take over within 10s of the active master closing")
	}
	if r.err != nil {
		t.Fatalf("WaitAsStandby: %v", r.err)
	}
	defer func() { _ = r.log.Close() }()
	t.Logf("standby took over %s after the active master closed", time.Since(closedAt).Round(time.Millisecond))
	if _, err := net.Dial("tcp", replLn.Addr().String()); err == nil {
		t.Fatal("the standby's replication listener is still open after it took over")
	}
}

// TestFencedMasterStopsServing: the active master answers role active and
// tcprepl_master_active 1; once its log is fenced (another holder took the
// lease) publishes get 503 with the reason, /readyz says role standby, and
// Serve returns ErrLogFailed so the process can become a standby.
func TestFencedMasterStopsServing(t *testing.T) {
	dsn := pgtest.Start(t).NewDatabase(t)
	cfg := pgConfig(t, dsn)
	cfg.Log.LeaseRenewInterval.Duration = 100 * time.Millisecond
	l, err := pglog.Open(context.Background(), pgOptions(cfg, dsn, logr.Discard(), nil))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, Options{Log: l, Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	replLn, _ := net.Listen("tcp", "127.0.0.1:0")
	httpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- m.Serve(replLn, httpLn) }()
	base := "http://" + httpLn.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, body := get(base + "/readyz"); code == 200 && strings.Contains(body, `"role":"active"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the master never reported role active")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, body := get(base + "/metrics"); !strings.Contains(body, "\ntcprepl_master_active 1\n") {
		t.Fatal("an active master does not export tcprepl_master_active 1")
	}
	if code, body := publishHTTP(base); code != 200 {
		t.Fatalf("publish while active: %d %s", code, body)
	}
	// Another master's takeover, as the lease sees it.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(context.Background(), `UPDATE tcprepl_lease SET holder = 'another-master', epoch = epoch + 1`); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, body := publishHTTP(base)
		if code == 503 && strings.Contains(body, "stream log unavailable, nothing acknowledged") && strings.Contains(body, "lease") {
			break
		}
		if code == 200 {
			t.Fatalf("a fenced master acknowledged a publish: %s", body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after fencing: %d %s, want 503 naming the lost lease", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-served:
		if !errors.Is(err, ErrLogFailed) || !errors.Is(err, pglog.ErrFenced) {
			t.Fatalf("Serve returned %v, want ErrLogFailed wrapping ErrFenced", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a fenced master kept serving")
	}
	rec := httptest.NewRecorder()
	m.handleReady(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"role":"standby"`) {
		t.Fatalf("/readyz of a fenced master: %d %s, want 503 role standby", rec.Code, rec.Body.String())
	}
}

func publishHTTP(base string) (int, string) {
	resp, err := http.Post(base+"/v1/streams/caches/rows", "application/json", strings.NewReader(`{"rows": [["f", ["k"], 1]]}`))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
