package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRunSmall runs every phase against an in-process master with small
// sizes and checks the figures are consistent with what was asked.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a master")
	}
	for _, kind := range []SubscriberKind{WireSubscribers, ClientSubscribers} {
		t.Run(string(kind), func(t *testing.T) { runSmall(t, kind) })
	}
}

func runSmall(t *testing.T, kind SubscriberKind) {
	res, err := Run(context.Background(), Config{
		Duration: 300 * time.Millisecond, Subscribers: 2, Publishers: 2, BatchRows: 10,
		CatchUpRows: 2000, LatencyRate: 2000, IdleConns: 20, SubscriberKind: kind,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Subscribers != kind {
		t.Fatalf("results say subscribers %q, want %q", res.Subscribers, kind)
	}
	if len(res.CatchUp) != 2 || res.CatchUp[0].RowsEach != 2000 || res.CatchUp[1].Subscribers != 10 || res.CatchUp[1].RowsEach != 2000 {
		t.Fatalf("catch-up %+v", res.CatchUp)
	}
	if len(res.Throughput) != 2 || res.Throughput[0].Publisher != "in-process" || res.Throughput[1].Publisher != "http" {
		t.Fatalf("throughput %+v", res.Throughput)
	}
	for _, tp := range res.Throughput {
		if tp.Rows == 0 || tp.Rows%10 != 0 || tp.PublishRowsPerSec <= 0 || tp.DeliveredRowsPerSec <= 0 {
			t.Fatalf("throughput %+v", tp)
		}
	}
	if l := res.Latency; l == nil || l.Samples == 0 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
		t.Fatalf("latency %+v", res.Latency)
	}
	if res.PeakRSSBytes <= 0 || res.BytesPerIdleConn != 0 || !strings.Contains(res.IdleConnMethod, "--spawn") {
		t.Fatalf("memory: peak %d, idle %f (%s)", res.PeakRSSBytes, res.BytesPerIdleConn, res.IdleConnMethod)
	}
}

// TestRunPhases runs only the phases asked for.
func TestRunPhases(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a master")
	}
	res, err := Run(context.Background(), Config{
		Duration: 200 * time.Millisecond, Subscribers: 2, Publishers: 2, BatchRows: 10,
		CatchUpRows: 500, IdleConns: 5, Phases: []Phase{PhasePublishHTTP},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.CatchUp) != 0 || res.Latency != nil || len(res.Throughput) != 1 || res.Throughput[0].Publisher != "http" {
		t.Fatalf("ran more than the HTTP publish phase: %+v", res)
	}
}

func TestRunErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"external without addresses":   {Config{Mode: External}, "--master"},
		"unknown mode":                 {Config{Mode: "elsewhere"}, "unknown mode"},
		"unknown phase":                {Config{Phases: []Phase{PhaseCatchUp, "warp"}}, "unknown phase"},
		"unknown subscriber kind":      {Config{SubscriberKind: "telepathic"}, "unknown subscriber kind"},
		"external master down":         {Config{Mode: External, MasterAddr: "127.0.0.1:1", HTTPURL: "http://127.0.0.1:1", MasterPID: os.Getpid(), IdleConns: 1}, "idle connection phase"},
		"external master down, no pid": {Config{Mode: External, MasterAddr: "127.0.0.1:1", HTTPURL: "http://127.0.0.1:1"}, "catch-up phase"},
		"spawn of a missing binary":    {Config{Mode: Spawn, Binary: "/nonexistent/tcprepl"}, "start /nonexistent/tcprepl master"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
