package synapse

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func sampleSnapshot(now time.Time) Snapshot {
	return Snapshot{
		MeasuredAt: now, ServerName: "example.org", Subscribed: true,
		LastMessageAt: now.Add(-2 * time.Second), LastSolicitAt: now.Add(-30 * time.Second),
		Streams: []Stream{
			{Name: "events", MinPosition: 120, MaxPosition: 130, Spread: 10, Writers: []Writer{
				{Instance: "ep-0", Announced: true, Configured: true, Position: 120, LastAdvanceAt: now.Add(-12 * time.Second), RowsPerSecond: 3.5, CommandsPerSecond: 4},
				{Instance: "ep-1", Announced: true, Configured: true, Position: 130, LastAdvanceAt: now.Add(-90 * time.Second), Gaps: 2, Resets: 1},
			}},
			{Name: "quarantined_media", Writers: []Writer{{Instance: "media-0", Configured: true}}},
			{Name: "typing", MinPosition: 4, MaxPosition: 4, Writers: []Writer{{Instance: "sync-0", Announced: true, Position: 4, LastAdvanceAt: now.Add(-3 * time.Hour)}}},
		},
		Responders:        []string{"ep-0", "ep-1", "master"},
		MissingWriters:    []WriterRef{{Stream: "quarantined_media", Instance: "media-0"}},
		UnexpectedWriters: []WriterRef{{Stream: "typing", Instance: "sync-0"}},
		Commands:          map[string]uint64{"POSITION": 7},
		Redis: RedisStats{Subscribers: 4, Clients: []PubSubClient{{ID: 3, Addr: "10.0.0.2:4000", OutputBufferBytes: 5 << 20}},
			OutputBufferHardLimitBytes: 32 << 20, OutputBufferSoftLimitBytes: 8 << 20, OutputBufferSoftSeconds: 60,
			Unavailable: "CONFIG GET client-output-buffer-limit: NOPERM"},
	}
}

func TestWriteTable(t *testing.T) {
	now := time.Unix(1767225600, 0)
	var b bytes.Buffer
	if err := WriteTable(&b, sampleSnapshot(now), now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	wantInOrder := []string{
		"server example.org: subscribed, last message 2s ago",
		"MISSING: media-0 is a configured writer of quarantined_media",
		"UNEXPECTED: sync-0 announces typing",
		"REPLICATE (sent 30s ago) answered by 3: ep-0 ep-1 master",
		"STREAM",
		"quarantined_media", // flagged rows first
		"typing",
		"events",
		"events",
		"redis: 4 subscribers on example.org; largest pub/sub output buffer 5.0 MiB (10.0.0.2:4000); limit 32.0 MiB hard, 8.0 MiB for 60s",
		"redis: not available: CONFIG GET",
	}
	i := 0
	for _, l := range lines {
		if i < len(wantInOrder) && strings.HasPrefix(l, wantInOrder[i]) {
			i++
		}
	}
	if i != len(wantInOrder) {
		t.Fatalf("line %q missing or out of order in:\n%s", wantInOrder[i], out)
	}
	for _, want := range []string{
		"ep-0     120       12s ago       3.5     4.0     0     0       10 behind",
		"ep-1     130       1m ago        0.0     0.0     2     1",
		"media-0  -         never",
		"3h ago",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	s := sampleSnapshot(now)
	s.Subscribed, s.Error = false, errors.New("redis unreachable: dial tcp: connection refused")
	s.ErrorMessage = s.Error.Error()
	b.Reset()
	if err := WriteTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	s.Redis = RedisStats{}
	b.Reset()
	if err := WriteTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "NOT SUBSCRIBED") || !strings.Contains(b.String(), "ERROR: redis unreachable") || !strings.Contains(b.String(), "redis: statistics not read yet") {
		t.Fatalf("the error is not shown first:\n%s", b.String())
	}
}

func TestWriteJSON(t *testing.T) {
	now := time.Unix(1767225600, 0).UTC()
	var b bytes.Buffer
	if err := WriteJSON(&b, sampleSnapshot(now)); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 || !strings.HasSuffix(b.String(), "\n") {
		t.Fatalf("want exactly one line: %q", b.String())
	}
	var back Snapshot
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	ep1 := back.Streams[0].Writers[1]
	if ep1.Instance != "ep-1" || ep1.Gaps != 2 || ep1.Resets != 1 || !ep1.LastAdvanceAt.Equal(now.Add(-90*time.Second)) || back.MissingWriters[0].Instance != "media-0" {
		t.Fatalf("round trip lost fields: %+v", back)
	}
	if !strings.Contains(b.String(), `"lastAdvanceAt":"2025-12-31T23:58:30Z"`) {
		t.Fatalf("lastAdvanceAt not RFC 3339: %s", b.String())
	}
}
