package replication

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"
)

// BenchmarkIdleConnectionMemory measures what the server holds for an idle
// connection: N raw loopback connections name themselves and subscribe to
// one stream from now, then stay silent. It reports the growth of the Go
// heap in use plus goroutine stacks per connection (bytes/conn), and the
// goroutines per connection. The client ends are raw sockets in the same
// process, so their few hundred bytes each are included.
//
// The timer runs through each iteration's whole work (a server, n
// connections, their teardown), so ns/op is the cost of one such round and
// b.N stays small; stopping the timer around it left the benchmark loop
// measuring nothing, growing b.N without end. The memory figures are the
// means over the iterations.
func BenchmarkIdleConnectionMemory(b *testing.B) {
	const n = 500
	var heap, stack, goroutines float64
	iterations := 0
	for b.Loop() {
		h, s, g := idleConnectionMemory(b, n)
		heap, stack, goroutines = heap+h, stack+s, goroutines+g
		iterations++
	}
	per := float64(iterations)
	b.ReportMetric((heap+stack)/per, "bytes/conn")
	b.ReportMetric(heap/per, "heap-bytes/conn")
	b.ReportMetric(stack/per, "stack-bytes/conn")
	b.ReportMetric(goroutines/per, "goroutines/conn")
}

func idleConnectionMemory(b *testing.B, n int) (heapPerConn, stackPerConn, goroutinesPerConn float64) {
	src := NewMemorySource("caches")
	src.Append("caches", row(`{"a":1}`))
	srv, err := NewServer(ServerConfig{ServerName: "bench.server"}, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		_ = srv.Shutdown(b.Context())
		if err := <-done; err != nil && !errors.Is(err, ErrServerClosed) {
			b.Errorf("Serve: %v", err)
		}
	}()

	measure := func() (uint64, uint64, int) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
	}
	heapBefore, stackBefore, gBefore := measure()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "NAME idle-%d\nREPLICATE caches NOW\n", i); err != nil {
			b.Fatal(err)
		}
	}
	// Each connection is idle once it has its POSITION.
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReaderSize(c, 256)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) >= 8 && line[:8] == "POSITION" {
				break
			}
		}
	}
	heapAfter, stackAfter, gAfter := measure()
	heap := float64(int64(heapAfter)-int64(heapBefore)) / float64(n)
	stack := float64(int64(stackAfter)-int64(stackBefore)) / float64(n)
	return heap, stack, float64(gAfter-gBefore) / float64(n)
}
