package probe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func sampleSnapshot(now time.Time) Snapshot {
	return Snapshot{
		MeasuredAt: now,
		Reachable:  true,
		ServerName: "matrix.example.org",
		Address:    "master:9092",
		Streams: []StreamPosition{
			{Name: "caches", Token: 54, RowsPerSecond: 0.25},
			{Name: "events", Token: 1023, RowsPerSecond: 12.5},
		},
		Heartbeat: HeartbeatStats{
			Last: 1200 * time.Microsecond, P50: 1100 * time.Microsecond, P99: 3 * time.Millisecond,
			Max: 5 * time.Millisecond, Samples: 12, LastSeen: now.Add(-2 * time.Second),
		},
		ConnectionsAvailable: true,
		Connections: []Connection{
			{ID: 3, Name: "worker-0", RemoteAddr: "10.0.0.5:45678", State: "streaming", Since: now.Add(-5 * time.Minute),
				Streams:          []ConnectionStream{{Name: "events", Token: 1013, TokensBehind: 10, SecondsBehind: 0.5}, {Name: "caches", Token: 54}},
				MaxSecondsBehind: 0.5},
			{ID: 4, Name: "worker-1", RemoteAddr: "10.0.0.6:45678", State: "streaming", Since: now.Add(-3 * time.Hour),
				Streams: []ConnectionStream{{Name: "events", Token: 1023}}},
		},
	}
}

func TestWriteTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 19, 30, 0, 0, time.UTC)
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleSnapshot(now), now); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Server name:  matrix.example.org",
		"Status:       reachable",
		"Address:      master:9092",
		"Measured at:  2026-11-26T19:30:00Z",
		"1.1ms / 3ms / 5ms",
		"(12 samples)",
		"2s ago",
		"events  1023   12.5",
		"caches  54     0.2",
		"worker-0",
		"events:10(0.5s)",
		"5m ago",
		"3h ago",
		"caught up",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteTableUnreachable(t *testing.T) {
	now := time.Date(2026, 11, 26, 19, 30, 0, 0, time.UTC)
	s := Snapshot{
		MeasuredAt: now,
		Error:      fmt.Errorf("%w: dial tcp 127.0.0.1:1: connection refused", ErrUnreachable),
		Heartbeat:  HeartbeatStats{Stale: true},
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, s, now); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"UNREACHABLE",
		"master unreachable: dial tcp 127.0.0.1:1: connection refused",
		"No heartbeat has come back yet.",
		"STALE",
		"No stream positions yet.",
		"Unavailable",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	now := time.Date(2026, 11, 26, 19, 30, 0, 0, time.UTC)
	s := sampleSnapshot(now)
	s.Error = fmt.Errorf("%w: GET http://x/v1/connections: 404", ErrHTTPUnreachable)
	var buf bytes.Buffer
	if err := WriteJSON(&buf, s); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, buf.String())
	}
	if back["error"] != s.Error.Error() {
		t.Fatalf("error field = %v, want %q", back["error"], s.Error.Error())
	}
	if back["serverName"] != "matrix.example.org" || back["reachable"] != true {
		t.Fatalf("fields lost: %v", back)
	}
	var round Snapshot
	if err := json.Unmarshal(buf.Bytes(), &round); err != nil {
		t.Fatal(err)
	}
	if len(round.Connections) != 2 || round.Heartbeat.P99 != 3*time.Millisecond || round.Streams[1].Token != 1023 {
		t.Fatalf("round trip lost data: %+v", round)
	}
}

func TestFormatAgo(t *testing.T) {
	now := time.Date(2026, 11, 26, 19, 30, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second:           "just now",
		500 * time.Millisecond: "just now",
		59 * time.Second:       "59s ago",
		2 * time.Hour:          "2h ago",
		72 * time.Hour:         "3d ago",
	} {
		if got := formatAgo(now, now.Add(-d)); got != want {
			t.Errorf("formatAgo(%v) = %q, want %q", d, got, want)
		}
	}
	if got := formatAgo(now, time.Time{}); got != "-" {
		t.Errorf("zero time = %q, want -", got)
	}
}
