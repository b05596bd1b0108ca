package replication

import (
	"slices"
	"testing"
)

func TestClientReplicatesAndCatchesUp(t *testing.T) {
	src := NewMemorySource("caches", "events")
	for i := 1; i <= 10; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	h := newRecordingClientHandler()
	runClient(t, ClientConfig{
		Address: addr, ServerName: "test.server", Name: "worker1", Handler: h,
		Streams: []StreamRequest{{Stream: "caches", Token: 4}, {Stream: "events", Now: true}},
	})
	waitFor(t, "caught up", func() bool { return h.caughtUpCount() == 1 })
	srv.Publish(src.Append("caches", cacheRow(11), cacheRow(12)))
	waitFor(t, "rows", func() bool { return len(h.rowTokens("caches")) == 8 })
	want := []int64{5, 6, 7, 8, 9, 10, 11, 11}
	if got := h.rowTokens("caches"); !slices.Equal(got, want) {
		t.Fatalf("row tokens %v, want %v", got, want)
	}
}
