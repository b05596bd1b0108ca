package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// idleConnBytes opens IdleConns raw connections that name themselves and
// subscribe to one stream from now, then stay silent, and measures the
// master's RSS growth per connection. It needs the master in another
// process (spawned, or external with its pid).
func (t *target) idleConnBytes(ctx context.Context) (float64, string, error) {
	n := t.cfg.IdleConns
	if t.m != nil || t.pid == 0 {
		// In-process, the benchmark's own heap, clients and Pebble's lazy
		// allocations blur the master's share beyond use.
		return 0, "not measured: use --spawn, or --master-pid for an external master", nil
	}
	measure := func() (int64, string) {
		rss, err := procStatus(t.pid, "VmRSS")
		if err != nil {
			return 0, "unknown: " + err.Error()
		}
		return rss, "master RSS growth"
	}
	before, method := measure()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var d net.Dialer
	for i := range n {
		c, err := d.DialContext(ctx, "tcp", t.addr)
		if err != nil {
			return 0, "", fmt.Errorf("dial idle connection %d: %w (raise the open-file limit for more)", i, err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "NAME bench-idle-%d\nREPLICATE %s NOW\n", i, Stream); err != nil {
			return 0, "", err
		}
	}
	// Wait until the master lists them all with their subscription.
	deadline := time.Now().Add(time.Minute)
	for {
		idle, err := t.countIdle(ctx)
		if err != nil {
			return 0, "", err
		}
		if idle >= n {
			break
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("only %d of %d idle connections subscribed after a minute", idle, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, _ := measure()
	return float64(after-before) / float64(n), method, nil
}

func (t *target) countIdle(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.httpURL+"/v1/connections?limit=100000", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out masterapi.ConnectionsResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("GET /v1/connections: %w", err)
	}
	n := 0
	for _, c := range out.Connections {
		if strings.HasPrefix(c.Name, "bench-idle-") && len(c.Streams) == 1 {
			n++
		}
	}
	return n, nil
}
