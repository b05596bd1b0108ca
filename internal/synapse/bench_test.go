package synapse

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
)

// benchLines are what a busy deployment publishes: mostly RDATA with
// today's 9-field events rows, POSITION, caches and USER_IP.
var benchLines = map[string]string{
	"RDATA events":   `RDATA events event_persister-1 1234567 ["$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg:example.org","!jEsUZKDJdhlrceRyVU:example.org","m.room.message",null,null,null,false,1,"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg:example.org"]`,
	"RDATA batch":    `RDATA caches master batch ["get_user_by_id",["@test:localhost:8823"],1490197670513]`,
	"POSITION":       "POSITION events event_persister-1 1234560 1234567",
	"USER_IP":        `USER_IP @alice:example.org ["syt_YWxpY2U_aBcDeFgHiJkLmNoPqRsT_0a1b2c","10.0.0.7","Mozilla/5.0 Element/1.11.0","ABCDEFGHIJ",1767225600000]`,
	"LOCK_RELEASED":  `LOCK_RELEASED ["media-0","purge_room_lock","!room:example.org"]`,
	"unknown":        "SOMETHING_NEW a b c",
	"REPLICATE":      "REPLICATE ",
	"malformed text": "POSITION events master 1 NaN",
}

func BenchmarkParse(b *testing.B) {
	for name, line := range benchLines {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				_, _ = Parse(line)
			}
		})
	}
}

// BenchmarkTrackerObserve is the watcher's cost per command without Redis:
// parse and update the per-writer state.
func BenchmarkTrackerObserve(b *testing.B) {
	tr := newTracker("example.org", map[string][]string{"events": {"event_persister-0", "event_persister-1"}}, time.Second, Limits{})
	now := time.Now()
	lines := []string{benchLines["RDATA events"], benchLines["RDATA batch"], benchLines["POSITION"]}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = tr.observe("example.org", lines[i%len(lines)], now)
		i++
	}
}

// publishAll publishes n event RDATA lines, pipelined 1000 at a time, as
// fast as Redis takes them, and returns how long that took.
func publishAll(b *testing.B, pub *redis.Client, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	pipe := pub.Pipeline()
	for i := range n {
		pipe.Publish(ctx, testServerName, "RDATA events event_persister-1 "+strconv.Itoa(i+1)+` ["$ev:example.org","!r:example.org","m.room.message",null,null,null,false,1,"$ev:example.org"]`)
		if i%1000 == 999 || i == n-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatalf("publish: %v", err)
			}
		}
	}
	return time.Since(start)
}

// BenchmarkWatcherRedis measures, against a real redis-server in the same
// run: Redis's own PUBLISH rate from a pipelined Go publisher with nobody
// subscribed, then the rate at which the watcher receives and tracks the
// same commands (publish to last one counted).
func BenchmarkWatcherRedis(b *testing.B) {
	addr, _ := redistest.StartRedis(b)
	pub := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, PoolSize: 1})
	defer func() { _ = pub.Close() }()
	n := max(b.N, 1000)

	b.StopTimer()
	alone := publishAll(b, pub, n)
	b.ReportMetric(float64(n)/alone.Seconds(), "redis-publish/s")

	w, err := NewWatcher(Config{Addr: addr, ServerName: testServerName, RateInterval: time.Second, Limits: Limits{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	for !w.Snapshot().Subscribed {
		time.Sleep(time.Millisecond)
	}
	b.StartTimer()
	start := time.Now()
	published := publishAll(b, pub, n)
	for w.Snapshot().Commands[NameRData] < uint64(n) {
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/published.Seconds(), "publish-with-watcher/s")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "watched/s")
}

// BenchmarkWatcherCPUAt10k publishes at 10,000 commands/s for b.N commands
// and reports the watcher's CPU time per command: the process's CPU time
// with the watcher subscribed, less the same paced publishing with nobody
// subscribed (the publisher's own share).
func BenchmarkWatcherCPUAt10k(b *testing.B) {
	addr, _ := redistest.StartRedis(b)
	pub := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, PoolSize: 1})
	defer func() { _ = pub.Close() }()
	n := max(b.N, 20000)
	const rate = 10000
	paced := func() time.Duration {
		ctx := context.Background()
		before := cpuTime(b)
		start := time.Now()
		const batch = 100 // 100 commands every 10ms
		for i := 0; i < n; i += batch {
			pipe := pub.Pipeline()
			for j := i; j < min(i+batch, n); j++ {
				pipe.Publish(ctx, testServerName, "POSITION events event_persister-1 "+strconv.Itoa(j)+" "+strconv.Itoa(j+1))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatalf("publish: %v", err)
			}
			if wait := time.Until(start.Add(time.Duration(i+batch) * time.Second / rate)); wait > 0 {
				time.Sleep(wait)
			}
		}
		return cpuTime(b) - before
	}
	b.StopTimer()
	publisherOnly := paced()

	w, err := NewWatcher(Config{Addr: addr, ServerName: testServerName})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	for !w.Snapshot().Subscribed {
		time.Sleep(time.Millisecond)
	}
	b.StartTimer()
	withWatcher := paced()
	for w.Snapshot().Commands[NamePosition] < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64((withWatcher-publisherOnly).Nanoseconds())/float64(n), "watcher-cpu-ns/cmd")
	b.ReportMetric(float64(publisherOnly.Nanoseconds())/float64(n), "publisher-cpu-ns/cmd")
	b.ReportMetric(100*float64(withWatcher-publisherOnly)/float64(time.Duration(n)*time.Second/rate), "watcher-cpu-%")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
