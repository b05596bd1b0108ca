package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tcprepl/tcprepl/internal/probe"
)

// tokenHistory remembers when each master stream reached each token, so a
// worker's durable position can be turned into seconds behind: the age of
// the first token after it. It is shared by the reconcilers of one
// operator.
type tokenHistory struct {
	mu      sync.Mutex
	streams map[types.NamespacedName]map[string][]tokenSeen
}

type tokenSeen struct {
	token int64
	at    time.Time
}

// maxTokenHistory bounds the entries kept per stream; a position older
// than the oldest kept is dated by that entry, an underestimate.
const maxTokenHistory = 512

func newTokenHistory() *tokenHistory {
	return &tokenHistory{streams: map[types.NamespacedName]map[string][]tokenSeen{}}
}

// record notes the streams' tokens as seen at the snapshot's time.
func (h *tokenHistory) record(master types.NamespacedName, snap probe.Snapshot) {
	if snap.MeasuredAt.IsZero() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.streams[master]
	if m == nil {
		m = map[string][]tokenSeen{}
		h.streams[master] = m
	}
	for _, s := range snap.Streams {
		seen := m[s.Name]
		if n := len(seen); n > 0 && seen[n-1].token >= s.Token {
			if seen[n-1].token > s.Token {
				// The log went back (reset): the old dates mean nothing.
				m[s.Name] = []tokenSeen{{s.Token, snap.MeasuredAt}}
			}
			continue
		}
		if len(seen) >= maxTokenHistory {
			seen = append(seen[:0], seen[1:]...)
		}
		m[s.Name] = append(seen, tokenSeen{s.Token, snap.MeasuredAt})
	}
}

// behindSince returns when the stream first held a token after position;
// false when position is at or past everything seen.
func (h *tokenHistory) behindSince(master types.NamespacedName, stream string, position int64) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.streams[master][stream] {
		if s.token > position {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// forget drops a master's history.
func (h *tokenHistory) forget(master types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.streams, master)
}
