package logmem

import (
	"sync"
	"time"
)

// rateSeconds is the window of the recent rows/second rate.
const rateSeconds = 10

// Rate counts rows per wall-clock second over the last rateSeconds
// seconds: enough to show "recent" throughput without keeping history.
type Rate struct {
	mu      sync.Mutex
	buckets [rateSeconds]int64
	seconds [rateSeconds]int64 // the unix second each bucket counts
}

func (m *Rate) Add(now time.Time, rows int) {
	sec := now.Unix()
	i := int(uint64(sec) % rateSeconds)
	m.mu.Lock()
	if m.seconds[i] != sec {
		m.seconds[i], m.buckets[i] = sec, 0
	}
	m.buckets[i] += int64(rows)
	m.mu.Unlock()
}

// PerSecond averages the rows of the rateSeconds whole seconds before now's
// second (the current second is still filling, so it would read low).
func (m *Rate) PerSecond(now time.Time) float64 {
	sec := now.Unix()
	var total int64
	m.mu.Lock()
	for i := range m.buckets {
		if s := m.seconds[i]; s < sec && s >= sec-rateSeconds {
			total += m.buckets[i]
		}
	}
	m.mu.Unlock()
	return float64(total) / rateSeconds
}
