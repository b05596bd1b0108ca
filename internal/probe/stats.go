package probe

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// ProbeName is the NAME the probe gives its connection, so the master's
// connection table (and the probe itself) can tell it from a worker.
const ProbeName = "tcprepl-probe"

// HeartbeatCacheName is the cache name the probe puts in its INVALIDATE_CACHE
// heartbeats (see replication.HeartbeatCacheName).
const HeartbeatCacheName = replication.HeartbeatCacheName

// latencyWindow keeps heartbeat round trips seen within a recent time window,
// capped in count so that a very short interval cannot grow it without bound.
type latencyWindow struct {
	window  time.Duration
	limit   int
	samples []latencySample // arrival order, oldest first
}

type latencySample struct {
	at time.Time
	d  time.Duration
}

func (w *latencyWindow) add(at time.Time, d time.Duration) {
	w.samples = append(w.samples, latencySample{at: at, d: d})
	if over := len(w.samples) - w.limit; w.limit > 0 && over > 0 {
		w.samples = slices.Delete(w.samples, 0, over)
	}
}

// prune drops samples older than the window, so that a spike an hour ago no
// longer shows as today's max.
func (w *latencyWindow) prune(now time.Time) {
	cut := 0
	for cut < len(w.samples) && now.Sub(w.samples[cut].at) > w.window {
		cut++
	}
	if cut > 0 {
		w.samples = slices.Delete(w.samples, 0, cut)
	}
}

// summary returns p50, p99 and max by nearest rank over the samples held.
func (w *latencyWindow) summary() (p50, p99, maxD time.Duration, n int) {
	n = len(w.samples)
	if n == 0 {
		return 0, 0, 0, 0
	}
	sorted := make([]time.Duration, n)
	for i, s := range w.samples {
		sorted[i] = s.d
	}
	slices.Sort(sorted)
	return nearestRank(sorted, 50), nearestRank(sorted, 99), sorted[n-1], n
}

// nearestRank is the smallest sample such that at least pct% of the samples
// are less or equal: no interpolation, so every reported value was measured.
func nearestRank(sorted []time.Duration, pct int) time.Duration {
	rank := (pct*len(sorted) + 99) / 100 // ceil(pct/100 * n)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// heartbeats tracks the heartbeats this probe sent and times them when the
// master relays them back. It is not safe for concurrent use; the probe
// guards it with its mutex.
type heartbeats struct {
	// prefix makes this probe's keys unique, so heartbeats of another probe
	// on the same master (the operator's and a user's CLI) are not matched.
	prefix      string
	seq         uint64
	outstanding map[string]time.Time // key -> when sent (monotonic reading)
	window      latencyWindow
	last        time.Duration
	lastSeen    time.Time
}

// maxOutstanding bounds the heartbeats remembered while none come back (a
// master that does not relay INVALIDATE_CACHE), so memory stays flat.
const maxOutstanding = 1024

func newHeartbeats(window time.Duration) (*heartbeats, error) {
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("probe: generate heartbeat id: %w", err)
	}
	return &heartbeats{
		prefix:      "tcprepl-probe:" + hex.EncodeToString(id[:]) + ":",
		outstanding: make(map[string]time.Time),
		window:      latencyWindow{window: window, limit: 4096},
	}, nil
}

// next returns the key of a new heartbeat sent at now. The key carries the
// wall-clock send time in nanoseconds so that anyone reading the caches
// stream can tell when it was sent; the probe itself times the round trip
// with the monotonic clock.
func (h *heartbeats) next(now time.Time) string {
	h.seq++
	key := h.prefix + strconv.FormatUint(h.seq, 10) + ":" + strconv.FormatInt(now.UnixNano(), 10)
	if len(h.outstanding) >= maxOutstanding {
		h.dropOldest()
	}
	h.outstanding[key] = now
	return key
}

func (h *heartbeats) dropOldest() {
	var oldestKey string
	var oldest time.Time
	for k, t := range h.outstanding {
		if oldestKey == "" || t.Before(oldest) {
			oldestKey, oldest = k, t
		}
	}
	delete(h.outstanding, oldestKey)
}

// observe matches a relayed key; it reports false for keys that are not this
// probe's outstanding heartbeats (another probe's, or already seen).
func (h *heartbeats) observe(key string, now time.Time) (time.Duration, bool) {
	if !strings.HasPrefix(key, h.prefix) {
		return 0, false
	}
	sent, ok := h.outstanding[key]
	if !ok {
		return 0, false
	}
	delete(h.outstanding, key)
	d := now.Sub(sent)
	h.window.add(now, d)
	h.last, h.lastSeen = d, now
	return d, true
}

// forget drops outstanding heartbeats when the connection is lost: their
// relays are lost with it, and timing them after a reconnect would measure
// the outage, not the replication latency.
func (h *heartbeats) forget() {
	clear(h.outstanding)
}

// oldestOutstanding returns how long the oldest unanswered heartbeat has
// been waiting, or 0 if none is.
func (h *heartbeats) oldestOutstanding(now time.Time) time.Duration {
	var oldest time.Duration
	for _, t := range h.outstanding {
		if d := now.Sub(t); d > oldest {
			oldest = d
		}
	}
	return oldest
}

func (h *heartbeats) stats(now time.Time, staleAfter time.Duration) HeartbeatStats {
	h.window.prune(now)
	p50, p99, maxD, n := h.window.summary()
	return HeartbeatStats{
		Last:     h.last,
		P50:      p50,
		P99:      p99,
		Max:      maxD,
		Samples:  n,
		LastSeen: h.lastSeen,
		Stale:    h.oldestOutstanding(now) > staleAfter,
	}
}

// rateWindow counts a stream's rows over a recent window to give a rate.
type rateWindow struct {
	window time.Duration
	start  time.Time // when counting began, so early rates are not diluted
	events []rateEvent
}

type rateEvent struct {
	at time.Time
	n  int
}

// add counts n rows at time at. Rows within one second share an entry, so
// a busy stream costs one entry per second of window, not one per batch.
func (r *rateWindow) add(at time.Time, n int) {
	if k := len(r.events); k > 0 && at.Sub(r.events[k-1].at) < time.Second {
		r.events[k-1].n += n
	} else {
		r.events = append(r.events, rateEvent{at: at, n: n})
	}
	r.prune(at)
}

func (r *rateWindow) prune(now time.Time) {
	cut := 0
	for cut < len(r.events) && now.Sub(r.events[cut].at) > r.window {
		cut++
	}
	if cut > 0 {
		r.events = slices.Delete(r.events, 0, cut)
	}
}

func (r *rateWindow) rate(now time.Time) float64 {
	r.prune(now)
	span := r.window
	if elapsed := now.Sub(r.start); elapsed < span {
		span = elapsed
	}
	// Under a second of history the rate is noise; wait for more.
	if span < time.Second {
		return 0
	}
	total := 0
	for _, e := range r.events {
		total += e.n
	}
	return float64(total) / span.Seconds()
}
