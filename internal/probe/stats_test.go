package probe

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNearestRank(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		pct    int
		want   time.Duration
	}{
		{"one sample", []time.Duration{ms(7)}, 50, ms(7)},
		{"one sample p99", []time.Duration{ms(7)}, 99, ms(7)},
		{"two samples p50 is the lower", []time.Duration{ms(1), ms(9)}, 50, ms(1)},
		{"two samples p99 is the upper", []time.Duration{ms(1), ms(9)}, 99, ms(9)},
		{"hundred p50", hundred, 50, ms(50)},
		{"hundred p99", hundred, 99, ms(99)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nearestRank(tt.sorted, tt.pct); got != tt.want {
				t.Fatalf("nearestRank(p%d) = %v, want %v", tt.pct, got, tt.want)
			}
		})
	}
}

func TestLatencyWindowPrunesOldAndCaps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := latencyWindow{window: time.Minute, limit: 3}
	w.add(t0, 900*time.Millisecond) // old spike
	w.add(t0.Add(50*time.Second), 10*time.Millisecond)
	w.add(t0.Add(55*time.Second), 20*time.Millisecond)
	w.prune(t0.Add(61 * time.Second))
	p50, p99, maxD, n := w.summary()
	if n != 2 || maxD != 20*time.Millisecond || p50 != 10*time.Millisecond || p99 != 20*time.Millisecond {
		t.Fatalf("after pruning the spike: p50=%v p99=%v max=%v n=%d", p50, p99, maxD, n)
	}
	for i := range 5 {
		w.add(t0.Add(60*time.Second+time.Duration(i)), time.Duration(i+1)*time.Millisecond)
	}
	if _, _, maxD, n := w.summary(); n != 3 || maxD != 5*time.Millisecond {
		t.Fatalf("capped window: n=%d max=%v, want 3 samples, max 5ms", n, maxD)
	}
	var empty latencyWindow
	if p50, p99, maxD, n := empty.summary(); p50 != 0 || p99 != 0 || maxD != 0 || n != 0 {
		t.Fatalf("empty window summary not zero")
	}
}

func TestHeartbeatsMatchOnlyOwnKeys(t *testing.T) {
	h, err := newHeartbeats(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newHeartbeats(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	key := h.next(t0)
	if !strings.HasPrefix(key, "tcprepl-probe:") {
		t.Fatalf("key %q lacks the probe prefix", key)
	}
	// The key's last field is the wall-clock send time in nanoseconds.
	ns, err := strconv.ParseInt(key[strings.LastIndexByte(key, ':')+1:], 10, 64)
	if err != nil || ns != t0.UnixNano() {
		t.Fatalf("key %q does not end with the send time %d", key, t0.UnixNano())
	}
	otherKey := other.next(t0)
	if _, ok := h.observe(otherKey, t0.Add(time.Millisecond)); ok {
		t.Fatal("matched another probe's heartbeat")
	}
	d, ok := h.observe(key, t0.Add(42*time.Millisecond))
	if !ok || d != 42*time.Millisecond {
		t.Fatalf("observe = %v, %v; want 42ms, true", d, ok)
	}
	if _, ok := h.observe(key, t0.Add(50*time.Millisecond)); ok {
		t.Fatal("matched the same heartbeat twice")
	}
	st := h.stats(t0.Add(time.Second), time.Second)
	if st.Samples != 1 || st.Last != 42*time.Millisecond || st.P50 != 42*time.Millisecond || st.Stale {
		t.Fatalf("stats = %+v", st)
	}
}

func TestHeartbeatsStale(t *testing.T) {
	h, err := newHeartbeats(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	h.next(t0)
	if st := h.stats(t0.Add(time.Second), 2*time.Second); st.Stale {
		t.Fatal("stale before the threshold")
	}
	if st := h.stats(t0.Add(3*time.Second), 2*time.Second); !st.Stale {
		t.Fatal("not stale after the threshold")
	}
	h.forget()
	if st := h.stats(t0.Add(3*time.Second), 2*time.Second); st.Stale {
		t.Fatal("stale after forgetting outstanding heartbeats")
	}
}

func TestHeartbeatsOutstandingBounded(t *testing.T) {
	h, err := newHeartbeats(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	first := h.next(t0)
	for i := range maxOutstanding + 10 {
		h.next(t0.Add(time.Duration(i+1) * time.Millisecond))
	}
	if len(h.outstanding) != maxOutstanding {
		t.Fatalf("outstanding = %d, want %d", len(h.outstanding), maxOutstanding)
	}
	if _, ok := h.outstanding[first]; ok {
		t.Fatal("the oldest heartbeat was kept instead of dropped")
	}
}

func TestRateWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := rateWindow{window: 10 * time.Second, start: t0}
	r.add(t0.Add(100*time.Millisecond), 5)
	if got := r.rate(t0.Add(500 * time.Millisecond)); got != 0 {
		t.Fatalf("rate under a second of history = %v, want 0", got)
	}
	r.add(t0.Add(200*time.Millisecond), 5) // same second: merged
	if len(r.events) != 1 {
		t.Fatalf("events in one second not merged: %d entries", len(r.events))
	}
	if got := r.rate(t0.Add(2 * time.Second)); got != 5 {
		t.Fatalf("rate after 2s with 10 rows = %v, want 5", got)
	}
	r.add(t0.Add(5*time.Second), 20)
	// At t0+15s the first entry has left the 10s window.
	if got := r.rate(t0.Add(15 * time.Second)); got != 2 {
		t.Fatalf("rate = %v, want 2 (20 rows over 10s)", got)
	}
	if got := r.rate(t0.Add(30 * time.Second)); got != 0 {
		t.Fatalf("rate with no recent rows = %v, want 0", got)
	}
}
