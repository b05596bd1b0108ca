package synapse

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
)

const testServerName = "example.org"

// homeserverYAML is the worker part of a homeserver config, as ess-helm
// renders it: two event persisters, a media worker writing
// quarantined_media, everything else on main.
const homeserverYAML = `
server_name: example.org
instance_map:
  main: {host: synapse-main, port: 9093}
  event_persister-0: {host: synapse-event-persister-0, port: 9093}
  event_persister-1: {host: synapse-event-persister-1, port: 9093}
  media-0: {host: synapse-media-0, port: 9093}
stream_writers:
  events: [event_persister-0, event_persister-1]
  quarantined_media_changes: media-0
  typing: main
`

// masterStreams are the streams the emulated main process writes: the ones
// stream_writers leaves to it, and the main-only ones.
var masterStreams = map[string]int64{
	"account_data": 310, "caches": 900, "device_lists": 77, "federation": 12,
	"presence": 4000, "presence_federation": 4000, "push_rules": 9,
	"pushers": 3, "receipts": 550, "thread_subscriptions": 2, "to_device": 81,
	"typing": 40, "un_partial_stated_room": 1, "un_partial_stated_event": 1,
}

// testLogger collects log lines so tests can check what an operator reads.
type testLogger struct {
	mu    sync.Mutex
	lines []string
}

func (l *testLogger) logr() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})
}

func (l *testLogger) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// startWatcher runs a watcher until the test ends.
func startWatcher(t *testing.T, cfg Config) *Watcher {
	t.Helper()
	if cfg.ServerName == "" {
		cfg.ServerName = testServerName
	}
	setDefault(&cfg.SettleTime, 300*time.Millisecond)
	setDefault(&cfg.RateInterval, 200*time.Millisecond)
	setDefault(&cfg.StatsInterval, 200*time.Millisecond)
	setDefault(&cfg.MinBackoff, 20*time.Millisecond)
	setDefault(&cfg.MaxBackoff, 200*time.Millisecond)
	w, err := NewWatcher(cfg)
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after its context ended; want nil", err)
		}
	})
	return w
}

// waitFor polls the watcher's snapshot until cond holds.
func waitFor(t *testing.T, w *Watcher, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := w.Snapshot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			s.Streams = nil // the rest is what a failure needs
			t.Fatalf("timed out waiting for %s; last snapshot without streams: %+v", what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func findWriter(s Snapshot, stream, instance string) (Writer, bool) {
	for _, st := range s.Streams {
		if st.Name != stream {
			continue
		}
		for _, w := range st.Writers {
			if w.Instance == instance {
				return w, true
			}
		}
	}
	return Writer{}, false
}

func findStream(s Snapshot, name string) Stream {
	for _, st := range s.Streams {
		if st.Name == name {
			return st
		}
	}
	return Stream{}
}

// TestWatcherEmulatedDeployment runs a deployment as SYNAPSE-TODAY.md says
// Synapse runs one (main, two event persisters, a sync worker and a media
// worker on one Redis) and checks every field of the watcher's snapshot.
func TestWatcherEmulatedDeployment(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	writers, err := ParseStreamWriters([]byte(homeserverYAML))
	if err != nil {
		t.Fatalf("ParseStreamWriters: %v", err)
	}
	// The watcher subscribes first, so that it hears every command the
	// deployment publishes and the counts can be compared exactly. The
	// processes' own REPLICATEs on start-up make every process announce.
	begin := time.Now()
	w := startWatcher(t, Config{Addr: addr, StreamWriters: writers})
	waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed && !s.LastSolicitAt.IsZero() })
	d := newDeployment(t, addr, testServerName)
	master := d.start(MainInstance, masterStreams)
	ep0 := d.start("event_persister-0", map[string]int64{"events": 100, "backfill": 5, "caches": 20})
	ep1 := d.start("event_persister-1", map[string]int64{"events": 98, "backfill": 7, "caches": 21})
	// A sync worker writes caches only, and (wrongly) typing: unexpected.
	d.start("synchrotron-0", map[string]int64{"caches": 30, "typing": 2})
	// The media worker answers for caches but never announces
	// quarantined_media: missing (element-hq/synapse#20080).
	d.start("media-0", map[string]int64{"caches": 11, "quarantined_media": 6}, "quarantined_media")

	allResponders := []string{"event_persister-0", "event_persister-1", MainInstance, "media-0", "synchrotron-0"}
	waitFor(t, w, "every process to answer the watcher's REPLICATE", func(s Snapshot) bool {
		return slices.Equal(s.Responders, allResponders) && len(s.MissingWriters) > 0
	})

	// Traffic: rows from both event persisters, a restart with a gap, a
	// typing reset, and every other command of today's table.
	ep0.write("events", 3)
	ep0.write("events", 1)
	ep1.write("events", 2)
	ep1.restart("events", 130)  // missed 99..129: prev_token 130 ahead of 99
	master.restart("typing", 0) // typing lives in memory: it resets
	master.publish(UserSync{InstanceID: "synchrotron-0", UserID: "@alice:example.org", DeviceID: "ABC", Syncing: true, LastSyncMS: 1767225600000})
	master.publish(ClearUserSync{InstanceID: "synchrotron-0"})
	master.publish(FederationAck{Instance: "federation_sender-0", Token: 12})
	master.publish(RemoteServerUp{Server: "matrix.org"})
	master.publish(LockReleased{Instance: "media-0", LockName: "purge", LockKey: "!r:example.org"})
	master.publish(NewActiveTask{TaskID: "T1"})
	master.publish(CancelTask{TaskID: "T1"})
	master.publish(UserIP{UserID: "@alice:example.org", JSON: `["syt","10.0.0.7","Element","ABC",1767225600000]`})
	d.publishRaw(testServerName, "SOMETHING_NEW arg")
	d.publishRaw(testServerName, "POSITION events master x 1")

	// The processes keep answering the restarts' REPLICATEs for a moment, so
	// what was published is read again at every poll.
	var want map[string]uint64
	waitFor(t, w, "every published command to be counted", func(s Snapshot) bool {
		want = d.sent()
		want[CountUnknown] = 1
		want[CountMalformed] = 1
		return reflect.DeepEqual(s.Commands, want)
	})
	// The restarts' REPLICATEs must have settled before missing writers are
	// judged again.
	s := waitFor(t, w, "the restarts' REPLICATE to settle", func(s Snapshot) bool {
		return s.MeasuredAt.Sub(s.LastMessageAt) > 400*time.Millisecond
	})
	end := time.Now()

	if !s.Subscribed || s.Error != nil || s.ErrorMessage != "" {
		t.Errorf("Subscribed=%v Error=%v ErrorMessage=%q; want subscribed, no error", s.Subscribed, s.Error, s.ErrorMessage)
	}
	if s.ServerName != testServerName {
		t.Errorf("ServerName = %q", s.ServerName)
	}
	for name, ts := range map[string]time.Time{"MeasuredAt": s.MeasuredAt, "LastMessageAt": s.LastMessageAt, "LastSolicitAt": s.LastSolicitAt} {
		if ts.Before(begin) || ts.After(end) {
			t.Errorf("%s = %v, not within the test's run %v..%v", name, ts, begin, end)
		}
	}
	if !slices.Equal(s.Responders, allResponders) {
		t.Errorf("Responders = %v, want %v", s.Responders, allResponders)
	}
	if want := []WriterRef{{Stream: "quarantined_media", Instance: "media-0"}}; !slices.Equal(s.MissingWriters, want) {
		t.Errorf("MissingWriters = %v, want %v", s.MissingWriters, want)
	}
	if want := []WriterRef{{Stream: "typing", Instance: "synchrotron-0"}}; !slices.Equal(s.UnexpectedWriters, want) {
		t.Errorf("UnexpectedWriters = %v, want %v", s.UnexpectedWriters, want)
	}
	if s.Overflow != 0 {
		t.Errorf("Overflow = %d, want 0", s.Overflow)
	}

	// Every stream: seen or configured, sorted.
	var names []string
	for _, st := range s.Streams {
		names = append(names, st.Name)
	}
	wantNames := slices.Sorted(maps.Keys(masterStreams))
	wantNames = append(wantNames, "backfill", "events", "quarantined_media")
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("streams = %v\nwant %v", names, wantNames)
	}

	type wantWriter struct {
		position            int64
		announced, configed bool
		gaps, resets        uint64
	}
	wantWriters := map[string]map[string]wantWriter{
		"events": {
			"event_persister-0": {position: 102, announced: true, configed: true},
			"event_persister-1": {position: 130, announced: true, configed: true, gaps: 1},
		},
		"backfill": {
			"event_persister-0": {position: 5, announced: true, configed: true},
			"event_persister-1": {position: 7, announced: true, configed: true},
		},
		"typing": {
			MainInstance:    {position: 0, announced: true, configed: true, resets: 1},
			"synchrotron-0": {position: 2, announced: true, configed: false},
		},
		"quarantined_media": {"media-0": {configed: true}},
		"caches": {
			"event_persister-0": {position: 20, announced: true, configed: true},
			"event_persister-1": {position: 21, announced: true, configed: true},
			MainInstance:        {position: 900, announced: true, configed: true},
			"media-0":           {position: 11, announced: true, configed: true},
			"synchrotron-0":     {position: 30, announced: true, configed: true},
		},
	}
	for stream, tok := range masterStreams {
		if _, set := wantWriters[stream]; !set {
			wantWriters[stream] = map[string]wantWriter{MainInstance: {position: tok, announced: true, configed: true}}
		}
	}
	for _, st := range s.Streams {
		want := wantWriters[st.Name]
		var got []string
		var positions []int64
		for _, wr := range st.Writers {
			got = append(got, wr.Instance)
			ww, ok := want[wr.Instance]
			if !ok {
				t.Errorf("%s: unexpected writer %s", st.Name, wr.Instance)
				continue
			}
			if wr.Position != ww.position || wr.Announced != ww.announced || wr.Configured != ww.configed || wr.Gaps != ww.gaps || wr.Resets != ww.resets {
				t.Errorf("%s/%s = %+v, want %+v", st.Name, wr.Instance, wr, ww)
			}
			if wr.Announced {
				positions = append(positions, wr.Position)
				if wr.LastSeenAt.Before(begin) || wr.LastSeenAt.After(end) || wr.LastAdvanceAt.Before(begin) || wr.LastAdvanceAt.After(wr.LastSeenAt) {
					t.Errorf("%s/%s: LastAdvanceAt %v, LastSeenAt %v not within %v..%v", st.Name, wr.Instance, wr.LastAdvanceAt, wr.LastSeenAt, begin, end)
				}
			} else if !wr.LastSeenAt.IsZero() || !wr.LastAdvanceAt.IsZero() {
				t.Errorf("%s/%s never spoke but has times %v %v", st.Name, wr.Instance, wr.LastSeenAt, wr.LastAdvanceAt)
			}
		}
		if wantInst := slices.Sorted(maps.Keys(want)); !slices.Equal(got, wantInst) {
			t.Errorf("%s: writers %v, want %v (sorted)", st.Name, got, wantInst)
		}
		if len(positions) > 0 {
			lo, hi := slices.Min(positions), slices.Max(positions)
			if st.MinPosition != lo || st.MaxPosition != hi || st.Spread != hi-lo {
				t.Errorf("%s: min/max/spread %d/%d/%d, want %d/%d/%d", st.Name, st.MinPosition, st.MaxPosition, st.Spread, lo, hi, hi-lo)
			}
		}
	}
	if ev := findStream(s, "events"); ev.Spread != 28 {
		t.Errorf("events spread = %d, want 28 (130-102)", ev.Spread)
	}
	// A writer that stopped while another restarted: typing on main went
	// back, so its last advance predates the reset.
	if typ, _ := findWriter(s, "typing", MainInstance); !typ.LastAdvanceAt.Before(typ.LastSeenAt) {
		t.Errorf("typing/master LastAdvanceAt %v should predate its reset at %v", typ.LastAdvanceAt, typ.LastSeenAt)
	}

	// What Redis says: five processes and the watcher subscribe; the
	// default pubsub limit of redis.conf (32 MB hard, 8 MB for 60 s).
	r := waitFor(t, w, "Redis statistics", func(s Snapshot) bool { return s.Redis.Subscribers == 6 }).Redis
	if r.Unavailable != "" {
		t.Errorf("Redis.Unavailable = %q, want empty", r.Unavailable)
	}
	if r.OutputBufferHardLimitBytes != 32<<20 || r.OutputBufferSoftLimitBytes != 8<<20 || r.OutputBufferSoftSeconds != 60 {
		t.Errorf("pubsub limit = %d/%d/%d, want 33554432/8388608/60", r.OutputBufferHardLimitBytes, r.OutputBufferSoftLimitBytes, r.OutputBufferSoftSeconds)
	}
	if len(r.Clients) != 6 {
		t.Errorf("Redis.Clients = %d entries, want 6 (five processes and the watcher): %+v", len(r.Clients), r.Clients)
	}
	for _, c := range r.Clients {
		if c.ID == 0 || !strings.HasPrefix(c.Addr, "127.0.0.1:") || c.Subscriptions < 1 || c.OutputBufferBytes < 0 {
			t.Errorf("pub/sub client %+v: want an id, a loopback address and a subscription", c)
		}
	}

	// Rates: steady traffic from one event persister shows as rows and
	// commands per second, and falls back to zero when it stops.
	stop := make(chan struct{})
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				// Not the Fatal helpers: this is not the test's goroutine.
				if _, err := ep0.Write(context.Background(), "events", 2); err != nil {
					t.Error(err)
				}
				if err := master.Publish(context.Background(), Format(UserIP{UserID: "@bob:example.org", JSON: `["syt","10.0.0.8","Element","DEF",1767225600000]`})); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	s = waitFor(t, w, "rates under traffic", func(s Snapshot) bool {
		ew, _ := findWriter(s, "events", "event_persister-0")
		return ew.RowsPerSecond > 0 && ew.CommandsPerSecond >= ew.RowsPerSecond && s.CommandsPerSecond > 0 && s.UserIPPerSecond > 0
	})
	if ew, _ := findWriter(s, "events", "event_persister-1"); ew.RowsPerSecond != 0 {
		t.Errorf("event_persister-1 sent nothing, but RowsPerSecond = %v", ew.RowsPerSecond)
	}
	close(stop)
	<-trafficDone
	waitFor(t, w, "rates to fall back to zero", func(s Snapshot) bool {
		ew, _ := findWriter(s, "events", "event_persister-0")
		return ew.RowsPerSecond == 0 && ew.CommandsPerSecond == 0 && s.CommandsPerSecond == 0 && s.UserIPPerSecond == 0
	})
	if t.Failed() {
		t.Logf("deployment published: %v", d.sent())
	}
}

func TestWatcherSolicits(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	d := newDeployment(t, addr, testServerName)
	d.start(MainInstance, map[string]int64{"events": 1})

	t.Run("every SolicitInterval", func(t *testing.T) {
		w := startWatcher(t, Config{Addr: addr, SolicitInterval: 100 * time.Millisecond})
		first := waitFor(t, w, "the first REPLICATE", func(s Snapshot) bool { return !s.LastSolicitAt.IsZero() }).LastSolicitAt
		second := waitFor(t, w, "a second REPLICATE", func(s Snapshot) bool { return s.LastSolicitAt.After(first) }).LastSolicitAt
		waitFor(t, w, "a third REPLICATE", func(s Snapshot) bool { return s.LastSolicitAt.After(second) })
	})
	t.Run("Solicit is rate-limited, not dropped", func(t *testing.T) {
		const gap = 300 * time.Millisecond
		w := startWatcher(t, Config{Addr: addr, MinSolicitGap: gap})
		first := waitFor(t, w, "the first REPLICATE", func(s Snapshot) bool { return !s.LastSolicitAt.IsZero() }).LastSolicitAt
		w.Solicit()
		w.Solicit()
		next := waitFor(t, w, "the asked-for REPLICATE", func(s Snapshot) bool { return s.LastSolicitAt.After(first) }).LastSolicitAt
		if next.Sub(first) < gap {
			t.Errorf("REPLICATE published %v after the previous one; MinSolicitGap is %v", next.Sub(first), gap)
		}
	})
	t.Run("SolicitInterval 0 publishes once", func(t *testing.T) {
		w := startWatcher(t, Config{Addr: addr})
		s := waitFor(t, w, "the first answer", func(s Snapshot) bool { return len(s.Responders) == 1 })
		// The main process answered the one REPLICATE; with no further
		// solicits its POSITION count stays at the one it sent.
		if got := s.Commands[NamePosition]; got != 1 {
			t.Errorf("POSITION count %d, want 1", got)
		}
	})
}

func TestWatcherNothingHeard(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	w := startWatcher(t, Config{Addr: addr, ServerName: "wrong.example.org"})
	s := waitFor(t, w, "ErrNothingHeard", func(s Snapshot) bool { return s.Error != nil && errors.Is(s.Error, ErrNothingHeard) })
	if !s.Subscribed || !strings.Contains(s.ErrorMessage, `"wrong.example.org"`) || !strings.Contains(s.ErrorMessage, "server name") {
		t.Errorf("Subscribed=%v ErrorMessage=%q; want subscribed and a message naming the channel", s.Subscribed, s.ErrorMessage)
	}
	if len(s.Responders) != 0 || len(s.Streams) != 0 || len(s.Commands) != 0 {
		t.Errorf("heard nothing, yet: responders %v streams %v commands %v", s.Responders, s.Streams, s.Commands)
	}
}
