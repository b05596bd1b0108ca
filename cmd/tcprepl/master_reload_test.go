package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// writeConfigFile replaces the file in one rename, as a ConfigMap volume
// update does.
func writeConfigFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitLog reads the master's log until a line contains every part.
func (p *masterProc) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-p.logs:
			if !ok {
				t.Fatalf("master exited while waiting for a log line with %q", parts)
			}
			match := true
			for _, part := range parts {
				match = match && strings.Contains(line, part)
			}
			if match {
				return line
			}
		case <-deadline:
			t.Fatalf("no log line with %q within 30s", parts)
		}
	}
}

func (p *masterProc) metric(t *testing.T, series string) string {
	t.Helper()
	resp, err := http.Get(p.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

func (p *masterProc) oldestToken(t *testing.T, stream string) int64 {
	t.Helper()
	resp, err := http.Get(p.httpURL + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Streams []masterapi.StreamStatus }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, s := range body.Streams {
		if s.Name == stream {
			return s.OldestToken
		}
	}
	t.Fatalf("no stream %s", stream)
	return 0
}

// stateCounter counts a replication client's connections.
type stateCounter struct {
	collector
	smu       sync.Mutex
	connected int
}

func (s *stateCounter) HandleConnectionState(st replication.ClientState, _ error) {
	if st == replication.ClientConnected {
		s.smu.Lock()
		s.connected++
		s.smu.Unlock()
	}
}

func (s *stateCounter) connections() int {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.connected
}

func (s *stateCounter) rows() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, b := range s.batches {
		n += len(b)
	}
	return n
}

const reloadBaseConfig = `serverName: hs.reload
retentionInterval: 100ms
retention:
  "*": {maxRows: 100}
`

// TestMasterProcessReloadsLiveSettings: a real `tcprepl master` whose
// config file changes retention applies it without a restart, while a
// connected worker stays connected; a change to a restart-only setting is
// logged and exported as pending, and the master keeps running.
func TestMasterProcessReloadsLiveSettings(t *testing.T) {
	bin := buildBinary(t)
	cfgPath := filepath.Join(t.TempDir(), "master.yaml")
	writeConfigFile(t, cfgPath, reloadBaseConfig)
	p := startMasterProc(t, bin, "--config", cfgPath, "--ephemeral", "--config-check-interval", "100ms")
	w := subscribeCaches(t, p)
	for range 5 {
		if code, body := p.publish(t, "caches", `{"rows": [["get_user_by_id", ["@a:x"], 1]]}`); code != 200 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	waitUntil(t, "worker received 5 rows", func() bool { return w.rows() == 5 })

	changed := time.Now()
	writeConfigFile(t, cfgPath, strings.Replace(reloadBaseConfig, `"*": {maxRows: 100}`, `"*": {maxRows: 100}`+"\n  caches: {maxRows: 2}", 1))
	p.waitLog(t, "live settings applied", "retention")
	t.Logf("retention applied %s after the file changed (--config-check-interval 100ms)", time.Since(changed).Round(time.Millisecond))
	waitUntil(t, "caches trimmed to the new retention", func() bool { return p.oldestToken(t, "caches") == 4 })
	if got := p.metric(t, `tcprepl_master_config_reloads_total{result="applied"}`); got != "1" {
		t.Fatalf("reloads applied = %q, want 1", got)
	}

	// A restart-only change is reported, not applied; nothing exits.
	writeConfigFile(t, cfgPath, "federation: true\n"+reloadBaseConfig+"  caches: {maxRows: 2}\n")
	p.waitLog(t, "take effect only on restart", "federation")
	if got := p.metric(t, "tcprepl_master_config_restart_pending"); got != "1" {
		t.Fatalf("restart pending = %q, want 1", got)
	}
	// An invalid file is refused and counted; the master runs on.
	writeConfigFile(t, cfgPath, reloadBaseConfig+"limits: {pingInterval: 30s, pingTimeout: 10s}\n")
	p.waitLog(t, "config reload refused", "pingTimeout")
	if got := p.metric(t, `tcprepl_master_config_reloads_total{result="invalid"}`); got != "1" {
		t.Fatalf("reloads invalid = %q, want 1", got)
	}

	if code, body := p.publish(t, "caches", `{"rows": [["get_user_by_id", ["@b:x"], 2]]}`); code != 200 {
		t.Fatalf("publish after the reloads: %d %s", code, body)
	}
	waitUntil(t, "worker received the row published after the reloads", func() bool { return w.rows() == 6 })
	if n := w.connections(); n != 1 {
		t.Fatalf("worker connected %d times, want once: a reload must not drop connections", n)
	}
	if err, lines := p.terminate(t); err != nil {
		t.Fatalf("exit: %v; logs:\n%s", err, strings.Join(lines, "\n"))
	}
}

// TestMasterProcessReloadsOnSIGHUP: with polling off, a changed file is
// applied when the master gets SIGHUP, which does not stop it.
func TestMasterProcessReloadsOnSIGHUP(t *testing.T) {
	bin := buildBinary(t)
	cfgPath := filepath.Join(t.TempDir(), "master.yaml")
	writeConfigFile(t, cfgPath, reloadBaseConfig)
	p := startMasterProc(t, bin, "--config", cfgPath, "--ephemeral", "--config-check-interval", "0")
	w := subscribeCaches(t, p)
	writeConfigFile(t, cfgPath, reloadBaseConfig+"limits: {maxRequestBytes: 100}\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "live settings applied", "limits.maxRequestBytes")
	code, body := p.publish(t, "caches", `{"rows": [["get_user_by_id", ["@`+strings.Repeat("a", 100)+`:x"], 1]]}`)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("publish over the reloaded maxRequestBytes: %d %s, want 413", code, body)
	}
	if n := w.connections(); n != 1 {
		t.Fatalf("worker connected %d times, want once", n)
	}
	if err, lines := p.terminate(t); err != nil {
		t.Fatalf("exit after SIGHUP then SIGTERM: %v; logs:\n%s", err, strings.Join(lines, "\n"))
	}
}

// subscribeCaches connects a replication client to the caches stream.
func subscribeCaches(t *testing.T, p *masterProc) *stateCounter {
	t.Helper()
	w := &stateCounter{collector: collector{batches: map[int64][]string{}}}
	c, err := replication.NewClient(replication.ClientConfig{
		Address: p.replAddr, ServerName: "hs.reload", Name: "reload-test", Handler: w,
		Streams: []replication.StreamRequest{{Stream: "caches"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("replication client: %v", err)
		}
	})
	waitUntil(t, "worker connected", func() bool { return w.connections() == 1 })
	return w
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMasterProcessSIGHUPWithoutConfigFile: SIGHUP to a master configured
// by flags only is logged and does not stop it (SIGHUP's default action
// would).
func TestMasterProcessSIGHUPWithoutConfigFile(t *testing.T) {
	bin := buildBinary(t)
	p := startMasterProc(t, bin, "--server-name", "hs.reload", "--ephemeral")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "SIGHUP: no --config file to reload")
	if code, body := p.publish(t, "caches", `{"rows": [["get_user_by_id", ["@a:x"], 1]]}`); code != 200 {
		t.Fatalf("publish after SIGHUP: %d %s", code, body)
	}
	if err, lines := p.terminate(t); err != nil {
		t.Fatalf("exit: %v; logs:\n%s", err, strings.Join(lines, "\n"))
	}
}

// TestMasterProcessConfigFileGone: a config file that cannot be read is a
// refused reload, counted once however many checks see it; once it is back
// the master reloads it.
func TestMasterProcessConfigFileGone(t *testing.T) {
	bin := buildBinary(t)
	cfgPath := filepath.Join(t.TempDir(), "master.yaml")
	writeConfigFile(t, cfgPath, reloadBaseConfig)
	p := startMasterProc(t, bin, "--config", cfgPath, "--ephemeral", "--config-check-interval", "50ms")
	if err := os.Remove(cfgPath); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "config reload refused", "read config file")
	// Several 50 ms checks see the file missing before it comes back
	// changed (the sleep only widens the window the count must hold over).
	time.Sleep(300 * time.Millisecond)
	writeConfigFile(t, cfgPath, reloadBaseConfig+"limits: {maxRequestBytes: 100}\n")
	p.waitLog(t, "live settings applied", "limits.maxRequestBytes")
	if got := p.metric(t, `tcprepl_master_config_reloads_total{result="invalid"}`); got != "1" {
		t.Fatalf("reloads invalid = %q, want 1: a missing file is counted once, not at every check", got)
	}
	if err, lines := p.terminate(t); err != nil {
		t.Fatalf("exit: %v; logs:\n%s", err, strings.Join(lines, "\n"))
	}
}
