package bench

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"
)

func TestAppendBatch(t *testing.T) {
	for name, tc := range map[string]struct {
		rowBytes, n int
		seq, ts     int64
	}{
		"one row":                    {rowBytes: 100, n: 1, seq: 0, ts: time.Now().UnixNano()},
		"a batch":                    {rowBytes: 100, n: 100, seq: 5000, ts: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano()},
		"rows smaller than overhead": {rowBytes: 1, n: 3, seq: 7, ts: 42},
		"large rows":                 {rowBytes: 4096, n: 10, seq: 1 << 40, ts: time.Now().UnixNano()},
	} {
		t.Run(name, func(t *testing.T) {
			tg := &target{cfg: Config{RowBytes: tc.rowBytes}}
			rows, _ := appendBatch(nil, nil, tg.rowPad(), tc.seq, tc.n, tc.ts)
			if len(rows) != tc.n {
				t.Fatalf("%d rows, want %d", len(rows), tc.n)
			}
			for i, r := range rows {
				var fields []json.RawMessage
				if err := json.Unmarshal(r, &fields); err != nil || len(fields) != 3 {
					t.Fatalf("row %d %s: %v (%d fields, want 3)", i, r, err, len(fields))
				}
				if want := "[" + strconv.FormatInt(tc.seq+int64(i), 10) + "]"; string(fields[1]) != want {
					t.Fatalf("row %d keys %s, want %s", i, fields[1], want)
				}
				if want := strconv.FormatInt(tc.ts, 10); string(fields[2]) != want {
					t.Fatalf("row %d timestamp %s, want %s", i, fields[2], want)
				}
				// About RowBytes long with a nanosecond timestamp, as
				// the benchmark's rows have.
				if tc.rowBytes > 35 && (len(r) < tc.rowBytes-10 || len(r) > tc.rowBytes+20) {
					t.Fatalf("row %d is %d bytes, want about %d", i, len(r), tc.rowBytes)
				}
			}
			// The buffers are reused: a second, smaller batch replaces the first.
			again, _ := appendBatch(rows, nil, tg.rowPad(), 0, 1, 3)
			if len(again) != 1 {
				t.Fatalf("reused: %d rows, want 1", len(again))
			}
		})
	}
}

// TestDeliveredLatency checks the timestamp parsing behind the latency
// samples: a sample per batch from its last row's last field, none for rows
// without one or while not recording.
func TestDeliveredLatency(t *testing.T) {
	past := time.Now().Add(-time.Hour).UnixNano()
	for name, tc := range map[string]struct {
		record  bool
		rows    int64
		lastRow string
		samples int
	}{
		"a batch":                  {record: true, rows: 10, lastRow: `["bench_x", [9], ` + strconv.FormatInt(past, 10) + `]`, samples: 1},
		"not recording":            {record: false, rows: 10, lastRow: `["bench_x", [9], ` + strconv.FormatInt(past, 10) + `]`},
		"no rows":                  {record: true, rows: 0, lastRow: ""},
		"last field not a number":  {record: true, rows: 1, lastRow: `["bench_x", [9], "soon"]`},
		"no space before the last": {record: true, rows: 1, lastRow: `[1]`},
	} {
		t.Run(name, func(t *testing.T) {
			s := &subscriber{}
			s.record.Store(tc.record)
			s.delivered(42, tc.rows, []byte(tc.lastRow))
			if s.rows.Load() != tc.rows || s.lastTok.Load() != 42 || s.lastAt.Load() == 0 {
				t.Fatalf("rows %d token %d at %d", s.rows.Load(), s.lastTok.Load(), s.lastAt.Load())
			}
			if len(s.latency) != tc.samples {
				t.Fatalf("%d latency samples, want %d", len(s.latency), tc.samples)
			}
			if tc.samples > 0 && s.latency[0] < time.Hour {
				t.Fatalf("latency %s, want at least an hour", s.latency[0])
			}
		})
	}
}
