package backoff

import (
	"slices"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	ms := time.Millisecond
	tests := map[string]struct {
		initial, max time.Duration
		jitter       func(time.Duration) time.Duration
		want         []time.Duration
	}{
		"top of the range doubles to the cap": {
			initial: 100 * ms, max: time.Second, jitter: func(n time.Duration) time.Duration { return n },
			want: []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second},
		},
		"bottom of the range is half the step": {
			initial: 100 * ms, max: time.Second, jitter: func(time.Duration) time.Duration { return 0 },
			want: []time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 500 * ms, 500 * ms},
		},
		"odd steps round up, never below half": {
			initial: 3 * time.Nanosecond, max: 5 * time.Nanosecond, jitter: func(time.Duration) time.Duration { return 0 },
			want: []time.Duration{2, 3, 3},
		},
		"cap below the initial delay is the initial delay": {
			initial: time.Second, max: ms, jitter: func(n time.Duration) time.Duration { return n },
			want: []time.Duration{time.Second, time.Second},
		},
		"no initial delay is one millisecond": {
			initial: 0, max: 4 * ms, jitter: func(n time.Duration) time.Duration { return n },
			want: []time.Duration{ms, 2 * ms, 4 * ms, 4 * ms},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := New(tc.initial, tc.max)
			b.jitter = tc.jitter
			var got []time.Duration
			for range tc.want {
				got = append(got, b.Next())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("delays %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResetStartsOver(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	b.jitter = func(n time.Duration) time.Duration { return n }
	for range 5 {
		b.Next()
	}
	b.Reset()
	if d := b.Next(); d != 100*time.Millisecond {
		t.Fatalf("after Reset: %v, want the initial delay", d)
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	b := New(100*time.Millisecond, 100*time.Millisecond)
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := b.Next()
		if d < 50*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("delay %v outside [50ms, 100ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays in 1000: no jitter", len(seen))
	}
}
