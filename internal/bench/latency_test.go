package bench

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for name, tc := range map[string]struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		"no samples":             {sorted: nil, p: 0.5, want: 0},
		"one sample, p50":        {sorted: ms(7), p: 0.5, want: 7 * time.Millisecond},
		"one sample, p99":        {sorted: ms(7), p: 0.99, want: 7 * time.Millisecond},
		"two samples, p50":       {sorted: ms(1, 2), p: 0.5, want: 2 * time.Millisecond},
		"p0 is the minimum":      {sorted: ms(1, 2, 3), p: 0, want: time.Millisecond},
		"p100 is the maximum":    {sorted: ms(1, 2, 3), p: 1, want: 3 * time.Millisecond},
		"hundred samples, p50":   {sorted: hundred, p: 0.5, want: 51 * time.Millisecond},
		"hundred samples, p99":   {sorted: hundred, p: 0.99, want: 100 * time.Millisecond},
		"hundred samples, p98":   {sorted: hundred, p: 0.98, want: 99 * time.Millisecond},
		"ten samples, p99 (max)": {sorted: ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), p: 0.99, want: 10 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			if got := quantile(tc.sorted, tc.p); got != tc.want {
				t.Fatalf("quantile(p=%v) = %s, want %s", tc.p, got, tc.want)
			}
		})
	}
}
