package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/synapse"
	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
)

// emulatedConfig has two event persisters and a quarantined_media writer;
// the other streams default to the main process, as in Synapse.
const emulatedConfig = `stream_writers:
  events: [event_persister1, event_persister2]
  quarantined_media_changes: media1
`

func TestSynapseEmulateFlags(t *testing.T) {
	tests := map[string]struct {
		args []string
		want string
	}{
		"no server name":    {[]string{}, "--server-name is required"},
		"bad writer":        {[]string{"--server-name", "x", "--writer", "events"}, `--writer "events": want STREAM=INSTANCE`},
		"bad silent":        {[]string{"--server-name", "x", "--silent-writer", "=a"}, "--silent-writer"},
		"zero interval":     {[]string{"--server-name", "x", "--interval", "0s"}, "--interval 0s: must be positive"},
		"both configs":      {[]string{"--server-name", "x", "--homeserver-config", "f", "--homeserver-config-yaml", "a: b"}, "not both"},
		"bad config YAML":   {[]string{"--server-name", "x", "--homeserver-config-yaml", "stream_writers: [unclosed"}, "homeserver config"},
		"missing config":    {[]string{"--server-name", "x", "--homeserver-config", "/nonexistent/homeserver.yaml"}, "read --homeserver-config"},
		"unreachable redis": {[]string{"--server-name", "x", "--redis", "127.0.0.1:1", "--interval", "10ms"}, "emulated process"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := newSynapseEmulateCommand()
			cmd.SetArgs(tc.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestSynapseEmulateAgainstWatcher runs the emulator on a real redis-server
// and checks that the real watcher, given the same stream_writers, sees
// every writer announce except the silent one.
func TestSynapseEmulateAgainstWatcher(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	writers, err := synapse.ParseStreamWriters([]byte(emulatedConfig))
	if err != nil {
		t.Fatal(err)
	}
	w, err := synapse.NewWatcher(synapse.Config{Addr: addr, ServerName: "example.com", StreamWriters: writers, SettleTime: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- w.Run(ctx) }()

	cmd := newSynapseEmulateCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--redis", addr, "--server-name", "example.com", "--homeserver-config-yaml", emulatedConfig,
		"--silent-writer", "quarantined_media=media1", "--interval", "100ms"})
	emuDone := make(chan error, 1)
	go func() { emuDone <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-emuDone; err != nil {
			t.Errorf("emulator: %v", err)
		}
		if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("watcher: %v", err)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	var problem string
	for time.Now().Before(deadline) {
		problem = emulationProblem(w.Snapshot())
		if problem == "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if problem != "" {
		t.Fatalf("the watcher does not see the emulated deployment: %s\nemulator: %s", problem, out.String())
	}
}

// emulationProblem says what the snapshot lacks, or "".
func emulationProblem(s synapse.Snapshot) string {
	if !s.Subscribed {
		return fmt.Sprintf("not subscribed (%v)", s.Error)
	}
	if got := fmt.Sprint(s.MissingWriters); got != "[{quarantined_media media1}]" {
		return "missing writers " + got
	}
	if len(s.UnexpectedWriters) > 0 {
		return fmt.Sprint("unexpected writers ", s.UnexpectedWriters)
	}
	advanced := map[string]bool{}
	for _, st := range s.Streams {
		for _, wr := range st.Writers {
			if wr.Announced && !wr.LastAdvanceAt.IsZero() {
				advanced[st.Name+"/"+wr.Instance] = true
			}
		}
	}
	for _, want := range []string{"events/event_persister1", "events/event_persister2", "backfill/event_persister1", "typing/master"} {
		if !advanced[want] {
			return want + " has not advanced"
		}
	}
	if fmt.Sprint(s.Responders) != "[event_persister1 event_persister2 master]" {
		return fmt.Sprint("responders ", s.Responders)
	}
	return ""
}
