// Command slowreaders measures a master's memory under connections that
// replicate a stream from token 0 and never read (issue 11): it publishes
// rows of a given size, opens the connections, keeps publishing live rows
// while they stay open, and samples the master's resident memory from
// /proc. Loopback only; it runs for a bounded time. See docs/benchmarks.md.
//
// On a fresh data directory the rows published get tokens 1 to --rows. By
// default every connection starts from token 0, so they all read the
// same range and the master shares their catch-up pages; --start-step N
// starts connection i from token i*N (modulo --rows), so that no two read
// the same pages and the catch-up budget alone bounds memory. At the end it
// prints the master's catch-up metrics (pages read and shared).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:9093", "the master's HTTP address")
	replAddr := flag.String("repl", "127.0.0.1:9092", "the master's replication address")
	pid := flag.Int("pid", 0, "the master's process id, for its memory (required)")
	rows := flag.Int("rows", 2000, "rows published before the connections open")
	liveRows := flag.Int("live-rows", 500, "rows published while the connections are open")
	rowBytes := flag.Int("row-bytes", 16000, "bytes of padding per row")
	conns := flag.Int("conns", 100, "connections that replicate from 0 and never read")
	hold := flag.Duration("hold", 20*time.Second, "how long the connections stay open")
	startStep := flag.Int("start-step", 0, "connection i replicates from token i*start-step (modulo --rows); 0: all from token 0")
	flag.Parse()
	if *startStep < 0 || *rows <= 0 {
		fmt.Fprintln(os.Stderr, "slowreaders: --start-step must be at least 0 and --rows at least 1")
		os.Exit(2)
	}
	if err := run(*httpAddr, *replAddr, *pid, *rows, *liveRows, *rowBytes, *conns, *startStep, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "slowreaders:", err)
		os.Exit(1)
	}
}

func run(httpAddr, replAddr string, pid, rows, liveRows, rowBytes, conns, startStep int, hold time.Duration) error {
	if pid <= 0 {
		return errors.New("--pid is required: the master's process id")
	}
	ctx, cancel := context.WithTimeout(context.Background(), hold+5*time.Minute)
	defer cancel()
	body := []byte(`{"rows": [["big", ["` + strings.Repeat("x", rowBytes) + `"], 1700000000000]]}`)
	publish := func(n int) error {
		for i := 0; i < n; i++ {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/v1/streams/caches/rows", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("publish row %d: %w", i, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("publish row %d: HTTP %d", i, resp.StatusCode)
			}
		}
		return nil
	}
	if err := publish(rows); err != nil {
		return err
	}
	base, _, err := memory(pid)
	if err != nil {
		return err
	}
	fmt.Printf("published %d rows of %d bytes; master RSS %d MiB\n", rows, rowBytes, base>>20)

	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", replAddr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		open = append(open, c)
		from := i * startStep % rows
		if _, err := fmt.Fprintf(c, "NAME slow-%d\nREPLICATE caches %d\n", i, from); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	if startStep == 0 {
		fmt.Printf("%d connections replicate caches from 0 and read nothing\n", conns)
	} else {
		fmt.Printf("%d connections replicate caches from 0, %d, %d, ... (modulo %d) and read nothing\n", conns, startStep%rows, 2*startStep%rows, rows)
	}
	done := make(chan error, 1)
	go func() { done <- publish(liveRows) }()
	peak := base
	deadline := time.Now().Add(hold)
	for time.Now().Before(deadline) {
		rss, _, err := memory(pid)
		if err != nil {
			return err
		}
		peak = max(peak, rss)
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("live publishing: %w", err)
	}
	rss, hwm, err := memory(pid)
	if err != nil {
		return err
	}
	fmt.Printf("after %s: master RSS %d MiB, peak sampled %d MiB, VmHWM %d MiB (before the connections: %d MiB)\n", hold, rss>>20, peak>>20, hwm>>20, base>>20)
	lines, err := catchUpMetrics(ctx, httpAddr)
	if err != nil {
		return err
	}
	for _, l := range lines {
		fmt.Println("master metric:", l)
	}
	return nil
}

// catchUpMetrics returns the master's tcprepl_replication_catchup_* lines.
func catchUpMetrics(ctx context.Context, httpAddr string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read the master's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read the master's metrics: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "tcprepl_replication_catchup_") {
			out = append(out, l)
		}
	}
	return out, nil
}

// memory returns the process's resident memory and its high-water mark.
func memory(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read the master's memory: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}
