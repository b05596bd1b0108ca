// Package backoff is the one retry delay of tcprepl: the replication
// client's reconnects, the HTTP sink's retries and the replication server's
// accept loop all wait with it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is a delay that doubles from an initial value up to a maximum.
// Each delay is drawn uniformly from the upper half of the current step,
// [d/2, d], so that peers that failed together (workers restarted with
// their master, sinks retrying against an endpoint that just came back) do
// not retry in step, and never sooner than half the step. It is not safe for
// concurrent use: each retry loop has its own.
type Backoff struct {
	initial, max, cur time.Duration
	// jitter returns a duration uniform in [0, n]; tests replace it.
	jitter func(n time.Duration) time.Duration
}

// New returns a backoff starting at initial and doubling up to maxDelay.
// A non-positive initial is 1 ms; maxDelay below initial is initial.
func New(initial, maxDelay time.Duration) *Backoff {
	if initial <= 0 {
		initial = time.Millisecond
	}
	return &Backoff{initial: initial, max: max(maxDelay, initial), cur: initial, jitter: uniform}
}

func uniform(n time.Duration) time.Duration { return rand.N(n + 1) }

// Next returns the delay before the next attempt and doubles the step.
func (b *Backoff) Next() time.Duration {
	d := b.cur - b.cur/2 + b.jitter(b.cur/2)
	b.cur = min(2*b.cur, b.max)
	return d
}

// Reset starts again from the initial delay, after a success.
func (b *Backoff) Reset() { b.cur = b.initial }
