package master

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/pgtest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

func reloads(m *Master, result string) float64 {
	return testutil.ToFloat64(m.reload.total.WithLabelValues(result))
}

// TestApplyLiveOnARunningMaster: a reload shortens retention, lowers the
// request bound and changes the keep-alive of a real master while a worker
// stays connected; a restart setting is reported as pending and not
// applied; an invalid config changes nothing.
func TestApplyLiveOnARunningMaster(t *testing.T) {
	cfg := masterapi.Config{ServerName: "hs.test", Ephemeral: true, RetentionInterval: masterapi.Duration{Duration: time.Hour}}
	lm := startMaster(t, cfg)
	w := startWorker(t, lm.replAddr, "synchrotron", replication.StreamRequest{Stream: "caches"})
	waitFor(t, "worker caught up", w.caughtUp)
	for range 5 {
		lm.publish(t, "caches", `["get_user_by_id",["@a:x"],1]`)
	}
	waitFor(t, "rows delivered", func() bool { return len(w.rowsOf("caches")) == 5 })

	updated := cfg
	updated.Retention = map[string]masterapi.Retention{"caches": {MaxRows: 2}}
	updated.Limits.MaxRequestBytes = 64
	updated.Limits.PingInterval.Duration = 7 * time.Second
	updated.Limits.PingTimeout.Duration = 40 * time.Second
	res, err := lm.ApplyLive(updated)
	if err != nil {
		t.Fatal(err)
	}
	wantApplied := []string{"retention", "limits.pingInterval", "limits.pingTimeout", "limits.maxRequestBytes"}
	if res.Result != ReloadApplied || !slices.Equal(res.Applied, wantApplied) || len(res.PendingRestart) != 0 {
		t.Fatalf("ApplyLive = %+v, want applied %v and nothing pending", res, wantApplied)
	}
	// The log trims by the new retention on its next pass.
	if err := lm.store.(*streamlog.Log).ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	var streams struct{ Streams []masterapi.StreamStatus }
	lm.getJSON(t, "/v1/streams", &streams)
	for _, s := range streams.Streams {
		if s.Name == "caches" && (s.OldestToken != 4 || s.Token != 5) {
			t.Fatalf("caches after the reload: %+v, want tokens 4..5", s)
		}
	}
	// A request over the new bound is refused.
	resp, err := http.Post(lm.httpURL+"/v1/streams/caches/rows", "application/json", strings.NewReader(`{"rows": [["get_user_by_id",["@a:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],1]]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("publish over limits.maxRequestBytes 64: %s, want 413", resp.Status)
	}
	if got := lm.srv.(serverAdapter).Live(); got.PingInterval != 7*time.Second || got.PingTimeout != 40*time.Second {
		t.Fatalf("protocol server keep-alive %s/%s, want 7s/40s", got.PingInterval, got.PingTimeout)
	}
	if got := lm.Config().Limits.MaxRequestBytes; got != 64 {
		t.Fatalf("Config().Limits.MaxRequestBytes = %d, want 64", got)
	}

	// A restart setting is pending, not applied; the live ones stay.
	restart := updated
	restart.ServerName = "other.test"
	if res, err = lm.ApplyLive(restart); err != nil {
		t.Fatal(err)
	}
	if res.Result != ReloadUnchanged || !slices.Equal(res.PendingRestart, []string{"serverName"}) {
		t.Fatalf("ApplyLive(serverName changed) = %+v, want unchanged with serverName pending", res)
	}
	if got := testutil.ToFloat64(lm.reload.pending); got != 1 {
		t.Fatalf("restart pending gauge %v, want 1", got)
	}
	if lm.Config().ServerName != "hs.test" {
		t.Fatalf("server name changed to %q without a restart", lm.Config().ServerName)
	}

	// An invalid config is refused and changes nothing.
	bad := updated
	bad.Limits.PingTimeout.Duration = time.Second
	if _, err := lm.ApplyLive(bad); err == nil || !strings.Contains(err.Error(), "pingTimeout") {
		t.Fatalf("ApplyLive(pingTimeout < pingInterval) = %v, want an error naming pingTimeout", err)
	}
	if got := lm.Config().Limits.PingTimeout.Duration; got != 40*time.Second {
		t.Fatalf("pingTimeout %s after a refused reload, want 40s", got)
	}
	// Back to the start-up restart settings: nothing pending any more.
	if res, err = lm.ApplyLive(updated); err != nil || res.Result != ReloadUnchanged || len(res.PendingRestart) != 0 {
		t.Fatalf("ApplyLive(same) = %+v, %v", res, err)
	}
	if got := testutil.ToFloat64(lm.reload.pending); got != 0 {
		t.Fatalf("restart pending gauge %v, want 0", got)
	}
	for result, want := range map[string]float64{ReloadApplied: 1, ReloadUnchanged: 2, ReloadInvalid: 1} {
		if got := reloads(lm.Master, result); got != want {
			t.Errorf("reloads{result=%s} = %v, want %v", result, got, want)
		}
	}

	// The worker was never dropped: one connection throughout, and it
	// still receives rows.
	lm.publish(t, "caches", `["get_user_by_id",["@b:x"],2]`)
	waitFor(t, "row after the reloads delivered", func() bool { return len(w.rowsOf("caches")) == 6 })
	w.mu.Lock()
	defer w.mu.Unlock()
	connected := 0
	for _, s := range w.states {
		if s == replication.ClientConnected {
			connected++
		}
	}
	if connected != 1 || len(w.errs) != 0 {
		t.Fatalf("worker states %v errors %v, want one connection and no error", w.states, w.errs)
	}
}

// TestApplyLiveUserIPBoundDropsTheOldest: lowering limits.maxUserIPs drops
// the least recently seen sightings at once.
func TestApplyLiveUserIPBoundDropsTheOldest(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{})
	for i, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		m.effects.UserIP("@u:x", ip, "ua", nil, int64(i))
	}
	updated := m.Config()
	updated.Limits.MaxUserIPs = 2
	if _, err := m.ApplyLive(updated); err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, u := range m.effects.ips.list("") {
		ips = append(ips, u.IP)
	}
	if !slices.Equal(ips, []string{"10.0.0.3", "10.0.0.2"}) {
		t.Fatalf("sightings %v, want the two newest", ips)
	}
}

// TestApplyLiveRefusesRetentionALogCannotChange: a log without
// SetRetention refuses a retention change as a whole; nothing is applied.
func TestApplyLiveRefusesRetentionALogCannotChange(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{})
	updated := m.Config()
	updated.Retention = map[string]masterapi.Retention{"*": {MaxRows: 3}}
	updated.Limits.MaxRequestBytes = 1024
	res, err := m.ApplyLive(updated)
	if err == nil || !strings.Contains(err.Error(), "restart the master") || res.Result != ReloadInvalid {
		t.Fatalf("ApplyLive = %+v, %v; want refused, saying to restart", res, err)
	}
	if got := m.Config().Limits.MaxRequestBytes; got != masterapi.DefaultMaxRequestBytes {
		t.Fatalf("maxRequestBytes %d after a refused reload, want the default", got)
	}
	if got := reloads(m, ReloadInvalid); got != 1 {
		t.Fatalf("reloads{invalid} = %v, want 1", got)
	}
}

// TestApplyLiveRetentionOnThePostgresLog: a master on the PostgreSQL log
// takes a retention change live; the log trims by it on its next pass.
func TestApplyLiveRetentionOnThePostgresLog(t *testing.T) {
	// Its own server: this package has no TestMain to stop a shared one.
	cfg := pgConfig(t, pgtest.Start(t).NewDatabase(t))
	cfg.RetentionInterval.Duration = time.Hour
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log, err := WaitForPostgresLog(ctx, cfg, ln, logr.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, Options{Logger: logr.Discard(), Log: log})
	if err != nil {
		_ = log.Close()
		t.Fatal(err)
	}
	defer func() { _ = m.Shutdown(context.Background()) }()
	for range 4 {
		if _, err := m.Publish(ctx, "caches", []json.RawMessage{json.RawMessage(`["get_user_by_id",["@a:x"],1]`)}); err != nil {
			t.Fatal(err)
		}
	}
	updated := cfg
	updated.Retention = map[string]masterapi.Retention{"*": {}, "caches": {MaxRows: 1}}
	if res, err := m.ApplyLive(updated); err != nil || res.Result != ReloadApplied {
		t.Fatalf("ApplyLive = %+v, %v", res, err)
	}
	if err := log.(*pglog.Log).ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	st, err := log.Stats("caches")
	if err != nil {
		t.Fatal(err)
	}
	if st.OldestToken != 4 || st.CurrentToken != 4 {
		t.Fatalf("caches after retention maxRows 1: %+v, want only token 4", st)
	}
}
