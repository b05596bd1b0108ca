package synapse

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
)

// TestWatcherBadInput: every kind of bad message is skipped, counted and
// logged, and the watcher keeps following the good ones.
func TestWatcherBadInput(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	var logs testLogger
	w := startWatcher(t, Config{Addr: addr, Logger: logs.logr()})
	waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed })
	d := newDeployment(t, addr, testServerName)

	bigRow := `["` + strings.Repeat("x", 1<<20) + `"]`
	tests := map[string]struct {
		msg string
		// counted is the Commands key the message must increase.
		counted string
		// logged are words of the log line that explains the skip; empty
		// when the message is fine.
		logged []string
	}{
		"malformed position":   {msg: "POSITION events", counted: CountMalformed, logged: []string{"malformed", "POSITION"}},
		"unknown command":      {msg: "SOMETHING_FROM_2027 a b c", counted: CountUnknown, logged: []string{"unknown command", "SOMETHING_FROM_2027"}},
		"non-numeric token":    {msg: "RDATA events master 12x [1]", counted: CountMalformed, logged: []string{"token", "12x"}},
		"non-numeric position": {msg: "POSITION events master 1 NaN", counted: CountMalformed, logged: []string{"new_token", "NaN"}},
		"newline inside":       {msg: "POSITION events master 1 2\nPOSITION events master 2 3", counted: CountMalformed, logged: []string{"newline"}},
		"1 MiB malformed":      {msg: "RDATA events master " + strings.Repeat("9", 1<<20) + " []", counted: CountMalformed, logged: []string{"not an integer", "bytes)"}},
		"1 MiB valid row":      {msg: "RDATA events master 77 " + bigRow, counted: NameRData},
		"overlong instance":    {msg: "POSITION events " + strings.Repeat("i", 300) + " 1 1", counted: CountMalformed, logged: []string{"longer than 256 bytes"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := w.Snapshot().Commands[tc.counted]
			d.publishRaw(testServerName, tc.msg)
			waitFor(t, w, tc.counted+" to be counted", func(s Snapshot) bool { return s.Commands[tc.counted] == before+1 })
			if len(tc.logged) > 0 {
				// Log lines are rate-limited to one a second: wait for this
				// one rather than assume it went out.
				deadline := time.Now().Add(5 * time.Second)
				for !logs.has(append([]string{"skipped a message"}, tc.logged...)...) {
					if time.Now().After(deadline) {
						t.Fatalf("no log line saying %q; logs: %v", tc.logged, logs.lines)
					}
					d.publishRaw(testServerName, tc.msg)
					time.Sleep(200 * time.Millisecond)
				}
			}
			// The watcher is still up and still follows good commands.
			tok := rand.Int64N(1 << 40)
			d.publishRaw(testServerName, fmt.Sprintf("POSITION sentinel master %d %d", tok, tok))
			s := waitFor(t, w, "the next good command", func(s Snapshot) bool {
				wr, ok := findWriter(s, "sentinel", MainInstance)
				return ok && wr.Position == tok
			})
			if !s.Subscribed || s.Error != nil {
				t.Fatalf("after %s: Subscribed=%v Error=%v", name, s.Subscribed, s.Error)
			}
		})
	}
	for _, line := range logs.lines {
		if len(line) > 2000 {
			t.Errorf("a log line is %d bytes long; hostile messages must be truncated: %.200s", len(line), line)
		}
	}
	if wr, _ := findWriter(w.Snapshot(), "events", MainInstance); wr.Position != 77 {
		t.Errorf("the 1 MiB RDATA moved events/master to %d, want 77", wr.Position)
	}
}

// TestWatcherFlood: a channel flooded with random stream and instance names
// fills the tracking limits and no more; the overflow is counted.
func TestWatcherFlood(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	limits := Limits{Streams: 10, Instances: 40}
	w := startWatcher(t, Config{Addr: addr, Limits: limits})
	waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed })

	pub := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true})
	defer func() { _ = pub.Close() }()
	const n = 3000
	ctx := context.Background()
	pipe := pub.Pipeline()
	for i := range n {
		pipe.Publish(ctx, testServerName, fmt.Sprintf("POSITION s%d inst-%x %d %d", i%25, rand.Uint64(), i, i))
		if i%500 == 499 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatalf("publish the flood: %v", err)
			}
		}
	}
	s := waitFor(t, w, "the flood to be counted", func(s Snapshot) bool { return s.Commands[NamePosition] == n })
	streams, writers := len(s.Streams), 0
	instances := make(map[string]bool)
	for _, st := range s.Streams {
		writers += len(st.Writers)
		for _, wr := range st.Writers {
			instances[wr.Instance] = true
		}
	}
	if streams > limits.Streams || len(instances) > limits.Instances {
		t.Errorf("tracking %d streams and %d instances; limits are %d and %d", streams, len(instances), limits.Streams, limits.Instances)
	}
	if s.Overflow != uint64(n-writers) {
		t.Errorf("Overflow = %d, want %d (the %d commands not tracked)", s.Overflow, n-writers, n-writers)
	}
	if !s.Subscribed || s.Error != nil {
		t.Errorf("after the flood: Subscribed=%v Error=%v", s.Subscribed, s.Error)
	}
}

// TestWatcherRedisRestart: Redis restarted under the watcher is reported,
// then the watcher resubscribes, solicits again and keeps its positions;
// what it missed while away is not counted as the writer's gap.
func TestWatcherRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	var logs testLogger
	w := startWatcher(t, Config{Addr: srv.Addr, Logger: logs.logr()})
	waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed })
	d := newDeployment(t, srv.Addr, testServerName)
	d.publishRaw(testServerName, "POSITION events master 10 10")
	waitFor(t, w, "events at 10", func(s Snapshot) bool { wr, _ := findWriter(s, "events", MainInstance); return wr.Position == 10 })
	firstSolicit := w.Snapshot().LastSolicitAt

	srv.Stop()
	s := waitFor(t, w, "the lost subscription", func(s Snapshot) bool { return !s.Subscribed })
	if !errors.Is(s.Error, ErrRedisUnreachable) || !strings.Contains(s.ErrorMessage, srv.Addr) {
		t.Errorf("while Redis is down: Error = %v; want ErrRedisUnreachable naming %s", s.Error, srv.Addr)
	}
	if wr, _ := findWriter(s, "events", MainInstance); wr.Position != 10 {
		t.Errorf("positions lost while Redis is down: %+v", wr)
	}

	srv.Restart(t)
	s = waitFor(t, w, "the new subscription and its REPLICATE", func(s Snapshot) bool {
		return s.Subscribed && s.LastSolicitAt.After(firstSolicit)
	})
	if s.Error != nil {
		t.Errorf("after the restart: Error = %v", s.Error)
	}
	if !logs.has("Redis subscription lost", "redis unreachable") {
		t.Errorf("no log line about the lost subscription: %v", logs.lines)
	}
	// The writer moved on while the watcher was away: not a gap.
	d.publishRaw(testServerName, "POSITION events master 25 25")
	// Then a real gap: prev_token ahead of what the watcher last saw.
	d.publishRaw(testServerName, "POSITION events master 40 41")
	s = waitFor(t, w, "events at 41", func(s Snapshot) bool { wr, _ := findWriter(s, "events", MainInstance); return wr.Position == 41 })
	if wr, _ := findWriter(s, "events", MainInstance); wr.Gaps != 1 {
		t.Errorf("Gaps = %d, want 1 (only the gap seen while subscribed)", wr.Gaps)
	}
}

func TestWatcherRedisErrors(t *testing.T) {
	protected := redistest.Start(t, "--requirepass", "s3cret")
	acl := redistest.Start(t,
		"--user", "default", "off",
		"--user", "watcher", "on", ">pw", "~*", "&*", "+@all", "-client", "-config",
		"--user", "listener", "on", ">pw", "~*", "&*", "+@all", "-publish")
	closedAddr := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		_ = l.Close()
		return a
	}()

	tests := map[string]struct {
		cfg     Config
		wantErr error
		mention string
	}{
		"wrong password":    {Config{Addr: protected.Addr, Password: "wrong"}, ErrRedisAuth, "credentials"},
		"no password":       {Config{Addr: protected.Addr}, ErrRedisAuth, "credentials"},
		"wrong user":        {Config{Addr: acl.Addr, Username: "nobody", Password: "pw"}, ErrRedisAuth, "credentials"},
		"db out of range":   {Config{Addr: protected.Addr, Password: "s3cret", DB: 99999}, ErrRedisAuth, "db number"},
		"nothing listening": {Config{Addr: closedAddr}, ErrRedisUnreachable, closedAddr},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := startWatcher(t, tc.cfg)
			// Before the first attempt the error is "not connected yet",
			// which is ErrRedisUnreachable too: wait for the named reason.
			s := waitFor(t, w, "the error", func(s Snapshot) bool {
				return errors.Is(s.Error, tc.wantErr) && strings.Contains(s.ErrorMessage, tc.mention)
			})
			if s.Subscribed {
				t.Errorf("Subscribed=%v ErrorMessage=%q; want unsubscribed and a message mentioning %q", s.Subscribed, s.ErrorMessage, tc.mention)
			}
			// Still trying: the error stays while Run keeps reconnecting,
			// and Run returns nil when stopped (startWatcher's cleanup).
			time.Sleep(50 * time.Millisecond)
			if s := w.Snapshot(); !errors.Is(s.Error, tc.wantErr) {
				t.Errorf("later: Error = %v", s.Error)
			}
		})
	}

	t.Run("right password", func(t *testing.T) {
		w := startWatcher(t, Config{Addr: protected.Addr, Password: "s3cret", DB: 3})
		waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed && s.Error == nil })
	})
	t.Run("ACL forbids PUBLISH", func(t *testing.T) {
		w := startWatcher(t, Config{Addr: acl.Addr, Username: "listener", Password: "pw"})
		s := waitFor(t, w, "the refused REPLICATE", func(s Snapshot) bool { return s.Subscribed && s.Error != nil })
		if !errors.Is(s.Error, ErrRedisAuth) || !strings.Contains(s.ErrorMessage, "cannot ask for positions") || !strings.Contains(s.ErrorMessage, "NOPERM") {
			t.Errorf("Error = %v; want ErrRedisAuth saying REPLICATE could not be published", s.Error)
		}
	})
	t.Run("ACL forbids CLIENT and CONFIG", func(t *testing.T) {
		w := startWatcher(t, Config{Addr: acl.Addr, Username: "watcher", Password: "pw"})
		s := waitFor(t, w, "the statistics", func(s Snapshot) bool { return s.Subscribed && s.Redis.Unavailable != "" })
		r := s.Redis
		if !strings.Contains(r.Unavailable, "CLIENT LIST") || !strings.Contains(r.Unavailable, "CONFIG GET") || !strings.Contains(r.Unavailable, "NOPERM") {
			t.Errorf("Unavailable = %q; want CLIENT LIST and CONFIG GET named with Redis's NOPERM", r.Unavailable)
		}
		if r.Subscribers != 1 || len(r.Clients) != 0 || r.OutputBufferHardLimitBytes != 0 {
			t.Errorf("Redis = %+v; want NUMSUB 1 and nothing of what was refused", r)
		}
		if s.Error != nil {
			t.Errorf("a refused statistic is not a watcher error: %v", s.Error)
		}
	})
}

func TestNewWatcherRefuses(t *testing.T) {
	tests := map[string]struct {
		cfg     Config
		mention string
	}{
		"no address":        {Config{ServerName: "x"}, "no Redis address"},
		"no port":           {Config{Addr: "redis", ServerName: "x"}, "HOST:PORT"},
		"no server name":    {Config{Addr: "redis:6379"}, "server name"},
		"space in name":     {Config{Addr: "redis:6379", ServerName: "a b"}, "server name"},
		"negative db":       {Config{Addr: "redis:6379", ServerName: "x", DB: -1}, "negative"},
		"negative interval": {Config{Addr: "redis:6379", ServerName: "x", SolicitInterval: -time.Second}, "SolicitInterval"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewWatcher(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("NewWatcher = %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
}

func TestWatcherRunsOnce(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	w := startWatcher(t, Config{Addr: addr})
	waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed })
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("a second Run returned nil; want an error")
	}
}

// TestWatcherOutputBufferLimit: a message larger than Redis's pub/sub output
// buffer limit makes Redis drop the watcher's subscription, as it drops a
// Synapse worker that falls behind; the watcher says why and resubscribes.
func TestWatcherOutputBufferLimit(t *testing.T) {
	addr, _ := redistest.StartRedis(t, "--client-output-buffer-limit", "pubsub", "65536", "32768", "60")
	var logs testLogger
	w := startWatcher(t, Config{Addr: addr, Logger: logs.logr()})
	first := waitFor(t, w, "the subscription", func(s Snapshot) bool { return s.Subscribed }).LastSolicitAt
	d := newDeployment(t, addr, testServerName)
	d.publishRaw(testServerName, "RDATA events master 5 "+`["`+strings.Repeat("x", 1<<20)+`"]`)
	s := waitFor(t, w, "the new subscription", func(s Snapshot) bool { return s.Subscribed && s.LastSolicitAt.After(first) })
	if s.Redis.OutputBufferHardLimitBytes != 65536 {
		t.Errorf("hard limit = %d, want 65536", s.Redis.OutputBufferHardLimitBytes)
	}
	if !logs.has("Redis subscription lost", "closed the subscription", "client-output-buffer-limit pubsub") {
		t.Errorf("no log line saying Redis closed the subscription: %v", logs.lines)
	}
	// Still following the channel.
	d.publishRaw(testServerName, "POSITION events master 6 6")
	waitFor(t, w, "events at 6", func(s Snapshot) bool { wr, _ := findWriter(s, "events", MainInstance); return wr.Position == 6 })
}
