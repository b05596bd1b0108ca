package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// BenchmarkCopyLimit is the reference the issue compares against, measured
// on the same machine at the same time: a bare loop that writes pre-encoded
// RDATA lines over loopback to N readers, which only count lines ("copy") or
// also decode each row with encoding/json ("decode"). No protocol engine,
// no queues, no parsing. The fan-out benchmark's rows/s divided by this
// one's is the fraction of the copy limit reached.
func BenchmarkCopyLimit(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		for _, decode := range []bool{false, true} {
			mode := "copy"
			if decode {
				mode = "decode"
			}
			b.Run(fmt.Sprintf("readers=%d/%s", n, mode), func(b *testing.B) { benchCopyLimit(b, n, decode) })
		}
	}
}

func benchCopyLimit(b *testing.B, readers int, decode bool) {
	// One 64 KiB block of complete lines, written again and again.
	var block []byte
	lines := 0
	for i := 0; len(block) < 64<<10-200; i++ {
		block = fmt.Appendf(block, "RDATA caches %d %s\n", 1000000+i, benchRow(i))
		lines++
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	blocks := (b.N + lines - 1) / lines
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
			for range blocks {
				if _, err := nc.Write(block); err != nil {
					return
				}
			}
		}()
	}
	conns := make([]net.Conn, readers)
	for i := range conns {
		if conns[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(block) / lines * readers))
	b.ResetTimer()
	start := time.Now()
	cpuStart := processCPUTime()
	var rwg sync.WaitGroup
	for _, nc := range conns {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			defer nc.Close()
			if !decode {
				buf := make([]byte, 64<<10)
				for {
					n, err := nc.Read(buf)
					_ = bytes.Count(buf[:n], []byte{'\n'})
					if err != nil {
						return
					}
				}
			}
			br := bufio.NewReaderSize(nc, 64<<10)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					if err != io.EOF {
						b.Error(err)
					}
					return
				}
				// "RDATA caches <token> " then the row.
				row := line[bytes.IndexByte(line[13:], ' ')+14 : len(line)-1]
				var v []any
				if err := json.Unmarshal(row, &v); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	rwg.Wait()
	elapsed := time.Since(start)
	cpu := processCPUTime() - cpuStart
	b.StopTimer()
	wg.Wait()
	rows := float64(blocks * lines * readers)
	b.ReportMetric(rows/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/rows, "cpu-ns/row")
}
