package replication

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource counts the rows the server reads from a Source.
type countingSource struct {
	Source
	rows atomic.Int64
}

func (s *countingSource) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]Update, error) {
	us, err := s.Source.ReadAfter(ctx, stream, after, upTo, limit)
	for _, u := range us {
		s.rows.Add(int64(len(u.Rows)))
	}
	return us, err
}

// BenchmarkCatchUpShared: 1 or 10 subscribers replicate 100,000 rows of
// 100 bytes from token 0 at the same time, each a bare reader that counts
// RDATA lines until POSITION (the server's cost, not a client's). One op is
// one such catch-up of all the subscribers. source-rows/row is the rows
// read from the Source per row delivered: 1 when every subscriber reads its
// own pages, down to 1/subscribers when they share them.
func BenchmarkCatchUpShared(b *testing.B) {
	const rows = 100_000
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			syn := &syntheticSource{stream: "caches"}
			syn.current.Store(rows)
			src := &countingSource{Source: syn}
			_, addr, _ := tlsBenchServer(b, src, false)
			want := []byte("POSITION caches " + strconv.Itoa(rows))
			b.ResetTimer()
			start, cpu0 := time.Now(), processCPUTime()
			for range b.N {
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						got, err := catchUpRaw(addr, want)
						switch {
						case err != nil:
							errs <- fmt.Errorf("after %d rows of %d: %w", got, rows, err)
						case got != rows:
							errs <- fmt.Errorf("received %d rows, want %d", got, rows)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			elapsed, cpu := time.Since(start), processCPUTime()-cpu0
			delivered := float64(rows) * float64(n) * float64(b.N)
			b.ReportMetric(delivered/elapsed.Seconds(), "rows/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/delivered, "cpu-ns/row")
			b.ReportMetric(float64(src.rows.Load())/delivered, "source-rows/row")
		})
	}
}

// catchUpRaw subscribes from token 0 and counts RDATA lines until the line
// want.
func catchUpRaw(addr string, want []byte) (int, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("NAME bench\nREPLICATE caches 0\n")); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(nc, 256<<10)
	got := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return got, err
		}
		switch {
		case bytes.HasPrefix(line, []byte("RDATA ")):
			got++
		case bytes.HasPrefix(line, want):
			return got, nil
		}
	}
}
