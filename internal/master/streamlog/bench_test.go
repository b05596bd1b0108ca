package streamlog

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// benchRow is a typical caches row (64 bytes), already in wire form.
func benchRow(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`["get_user_by_id", ["@user%08d:example.com"], %d]`, i, 1490197670513+i))
}

func benchBatch(n, seed int) []json.RawMessage {
	rows := make([]json.RawMessage, n)
	for i := range rows {
		rows[i] = benchRow(seed + i)
	}
	return rows
}

// BenchmarkAppend measures durable appends: each op is one Append of a
// batch, acknowledged only after fsync. Appenders run concurrently and share
// group commits. The dir is on the test temp dir's filesystem.
func BenchmarkAppend(b *testing.B) {
	for _, appenders := range []int{1, 16, 64} {
		for _, batch := range []int{1, 100} {
			b.Run(fmt.Sprintf("appenders=%d/batch=%d", appenders, batch), func(b *testing.B) {
				l := openTest(b, Options{Dir: b.TempDir(), Streams: []string{"caches"}})
				defer closeTest(b, l)
				rows := benchBatch(batch, 0)
				size := 0
				for _, r := range rows {
					size += len(r)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				var next atomic.Int64
				var wg sync.WaitGroup
				ctx := context.Background()
				b.ResetTimer()
				start, cpu0, rounds0 := time.Now(), cpuTime(b), l.rounds.Load()
				for range appenders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if _, err := l.Append(ctx, "caches", rows); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "rows/s")
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N*batch), "cpu-ns/row")
				b.ReportMetric(float64(b.N)/float64(l.rounds.Load()-rounds0), "appends/round")
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkReadAfter measures catch-up: one reader pages through 1,000,000
// rows (batches of 100) in pages of 10,000 rows. Each op reads them all.
func BenchmarkReadAfter(b *testing.B) {
	for _, src := range readSources {
		b.Run("from="+src.name, func(b *testing.B) { benchmarkReadAfter(b, src.tailCache) })
	}
}

// readSources: catch-up from Pebble's sstables (a worker far behind), and
// from the tail cache sized to hold the million rows (a worker a little
// behind, or many workers catching up together).
var readSources = []struct {
	name      string
	tailCache int64
}{{"pebble", -1}, {"tailcache", 256 << 20}}

func benchmarkReadAfter(b *testing.B, tailCache int64) {
	const total, batch, page = 1_000_000, 100, 10_000
	l := openTest(b, Options{Dir: b.TempDir(), Streams: []string{"caches"}, TailCacheBytes: tailCache})
	defer closeTest(b, l)
	loadRows(b, l, "caches", total, batch)
	// Pebble reads come from sstables, the steady state of a worker far
	// behind, not from the memtable.
	if err := l.db.Flush(); err != nil {
		b.Fatal(err)
	}
	cur, _ := l.CurrentToken("caches")
	var bytes int64
	for _, u := range mustRead(b, l, "caches", 0, 1, 1) {
		bytes = int64(len(u.Rows[0])) * total
	}
	ctx := context.Background()
	b.SetBytes(bytes)
	b.ReportAllocs()
	start, cpu0 := time.Now(), cpuTime(b)
	for b.Loop() {
		after, rows := int64(0), 0
		for after < cur {
			us, err := l.ReadAfter(ctx, "caches", after, cur, page)
			if err != nil {
				b.Fatal(err)
			}
			for i := range us {
				rows += len(us[i].Rows)
			}
			after = us[len(us)-1].Token
		}
		if rows != total {
			b.Fatalf("read %d rows, want %d", rows, total)
		}
	}
	b.ReportMetric(float64(b.N*total)/time.Since(start).Seconds(), "rows/s")
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N*total), "cpu-ns/row")
}

// cpuTime is the process's user+system CPU time. On a shared, loaded
// machine wall-clock rates swing with the neighbours; CPU per row (all
// goroutines: committer, Pebble's flushes and WAL writer, the GC) does not.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadRows appends total rows in batches from several goroutines.
func loadRows(b *testing.B, l *Log, stream string, total, batch int) {
	b.Helper()
	var wg sync.WaitGroup
	var next atomic.Int64
	rows := benchBatch(batch, 0)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(int64(batch)) <= int64(total) {
				if _, err := l.Append(context.Background(), stream, rows); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkReadAfterConcurrent: 10 readers each page through the same
// 1,000,000 rows at once (workers catching up together). One op is all ten
// reading the million; rows/s is the total delivered.
func BenchmarkReadAfterConcurrent(b *testing.B) {
	for _, src := range readSources {
		b.Run("from="+src.name, func(b *testing.B) { benchmarkReadAfterConcurrent(b, src.tailCache) })
	}
}

func benchmarkReadAfterConcurrent(b *testing.B, tailCache int64) {
	const total, batch, page, readers = 1_000_000, 100, 10_000, 10
	l := openTest(b, Options{Dir: b.TempDir(), Streams: []string{"caches"}, TailCacheBytes: tailCache})
	defer closeTest(b, l)
	loadRows(b, l, "caches", total, batch)
	if err := l.db.Flush(); err != nil {
		b.Fatal(err)
	}
	cur, _ := l.CurrentToken("caches")
	ctx := context.Background()
	b.ReportAllocs()
	start, cpu0 := time.Now(), cpuTime(b)
	for b.Loop() {
		var wg sync.WaitGroup
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				after, rows := int64(0), 0
				for after < cur {
					us, err := l.ReadAfter(ctx, "caches", after, cur, page)
					if err != nil {
						b.Error(err)
						return
					}
					for i := range us {
						rows += len(us[i].Rows)
					}
					after = us[len(us)-1].Token
				}
				if rows != total {
					b.Errorf("read %d rows, want %d", rows, total)
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(b.N*total*readers)/time.Since(start).Seconds(), "rows/s")
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N*total*readers), "cpu-ns/row")
}
