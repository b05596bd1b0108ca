package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// statusLimiter spaces out status writes that only carry new measurements,
// so a busy topology (positions moving every millisecond) costs each
// resource at most one write per interval.
type statusLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[types.NamespacedName]time.Time
}

func newStatusLimiter(interval time.Duration, now func() time.Time) *statusLimiter {
	if now == nil {
		now = time.Now
	}
	return &statusLimiter{interval: interval, now: now, last: map[types.NamespacedName]time.Time{}}
}

// allow reports whether a measurement-only write may happen now, and if
// not, how long until it may.
func (l *statusLimiter) allow(key types.NamespacedName) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.last[key]
	if !ok {
		return true, 0
	}
	next := last.Add(l.interval)
	now := l.now()
	if !now.Before(next) {
		return true, 0
	}
	return false, next.Sub(now)
}

// wrote records a status write.
func (l *statusLimiter) wrote(key types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last[key] = l.now()
}

// forget drops a deleted resource.
func (l *statusLimiter) forget(key types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.last, key)
}
