package master

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// BenchmarkPublish measures the master's publish path (validate, encode,
// append to an in-memory Pebble log, hand to the server) for batches of
// 100 caches rows of about 100 bytes, with no subscribers.
func BenchmarkPublish(b *testing.B) {
	m, err := New(masterapi.Config{ServerName: "bench", Ephemeral: true}, Options{Logger: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = m.Shutdown(b.Context()) }()
	rows := make([]json.RawMessage, 100)
	size := 0
	for i := range rows {
		rows[i] = json.RawMessage(fmt.Sprintf(`["bench_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", [%d], 1700000000000000000]`, i))
		size += len(rows[i])
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	// Many publishers at once, so group commit has something to group.
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Publish(b.Context(), "caches", rows); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkPublishHTTP is BenchmarkPublish through the HTTP handler (body
// parsing and the JSON reply included, no network).
func BenchmarkPublishHTTP(b *testing.B) {
	m, err := New(masterapi.Config{ServerName: "bench", Ephemeral: true}, Options{Logger: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = m.Shutdown(b.Context()) }()
	h := m.Handler()
	var body strings.Builder
	body.WriteString(`{"rows": [`)
	for i := range 100 {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `["bench_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", [%d], 1700000000000000000]`, i)
	}
	body.WriteString("]}")
	payload := body.String()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/v1/streams/caches/rows", strings.NewReader(payload))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Errorf("%d %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "rows/s")
}
