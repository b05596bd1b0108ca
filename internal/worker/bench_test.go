package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
)

var benchRow = json.RawMessage(`["ev", ["$149019767112vOHxz:localhost:8823", "!AFDCvgApUmpdfVjIXm:localhost:8823", "m.room.guest_access", "", null, null]]`)

// BenchmarkEncodeBatch is the cost of turning a batch into sink lines.
func BenchmarkEncodeBatch(b *testing.B) {
	batch := Batch{Stream: "events", Token: 1234567, Rows: []json.RawMessage{benchRow, benchRow, benchRow, benchRow}}
	var buf bytes.Buffer
	b.SetBytes(int64(4 * len(benchRow)))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := encodeBatch(&buf, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileSinkDeliver is one durable batch: one write and one fsync,
// which dominates on real disks.
func BenchmarkFileSinkDeliver(b *testing.B) {
	s, err := OpenFileSink(filepath.Join(b.TempDir(), "rows.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	rows := []json.RawMessage{benchRow}
	b.SetBytes(int64(len(benchRow)))
	b.ReportAllocs()
	tok := int64(0)
	for b.Loop() {
		tok++
		if err := s.Deliver(context.Background(), Batch{Stream: "events", Token: tok, Rows: rows}); err != nil {
			b.Fatal(err)
		}
	}
}
