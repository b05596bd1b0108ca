package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// MemorySource is an in-memory Source for tests and examples: every stream
// is a slice of updates with growing tokens. It is safe for concurrent use.
type MemorySource struct {
	mu      sync.RWMutex
	streams map[string]*memStream
	order   []string
	now     func() time.Time
}

type memStream struct {
	updates []Update // in token order
	current int64
	// trimmedTo is the newest token removed by Trim: reading after an
	// older token gets a TokenTooOldError.
	trimmedTo int64
}

// NewMemorySource returns a source serving the given streams, each at token 0.
func NewMemorySource(streams ...string) *MemorySource {
	m := &MemorySource{streams: map[string]*memStream{}, now: time.Now}
	for _, s := range streams {
		m.AddStream(s, 0)
	}
	return m
}

// AddStream adds a stream starting at the given token (no-op if it exists).
func (m *MemorySource) AddStream(stream string, token int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.streams[stream]; ok {
		return
	}
	m.streams[stream] = &memStream{current: token, trimmedTo: token}
	m.order = append(m.order, stream)
}

// Append stores rows as the next token of the stream (the stream is created
// if needed) and returns the update, ready for Server.Publish. Several rows
// make a batch.
func (m *MemorySource) Append(stream string, rows ...json.RawMessage) Update {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.streams[stream]
	if !ok {
		st = &memStream{}
		m.streams[stream] = st
		m.order = append(m.order, stream)
	}
	st.current++
	u := Update{Stream: stream, Token: st.current, Rows: slices.Clone(rows), Time: m.now()}
	st.updates = append(st.updates, u)
	return u
}

// AdvanceToken moves the stream's current token without rows (as a write
// that produced none does).
func (m *MemorySource) AdvanceToken(stream string, token int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.streams[stream]; ok && token > st.current {
		st.current = token
	}
}

// Trim drops the updates with token <= upTo; reading after an older token
// then fails with a *TokenTooOldError.
func (m *MemorySource) Trim(stream string, upTo int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.streams[stream]
	if !ok || upTo <= st.trimmedTo {
		return
	}
	i := sort.Search(len(st.updates), func(i int) bool { return st.updates[i].Token > upTo })
	st.updates = slices.Clone(st.updates[i:])
	st.trimmedTo = upTo
}

// Streams implements Source.
func (m *MemorySource) Streams() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.order)
}

// CurrentToken implements Source.
func (m *MemorySource) CurrentToken(stream string) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st, ok := m.streams[stream]
	if !ok {
		return 0, fmt.Errorf("stream %q: %w", stream, ErrUnknownStream)
	}
	return st.current, nil
}

// ReadAfter implements Source.
func (m *MemorySource) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]Update, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	st, ok := m.streams[stream]
	if !ok {
		return nil, fmt.Errorf("stream %q: %w", stream, ErrUnknownStream)
	}
	if after < st.trimmedTo {
		return nil, &TokenTooOldError{Stream: stream, Token: after, Oldest: st.trimmedTo + 1}
	}
	i := sort.Search(len(st.updates), func(i int) bool { return st.updates[i].Token > after })
	var out []Update
	rows := 0
	for ; i < len(st.updates) && st.updates[i].Token <= upTo && rows < limit; i++ {
		out = append(out, st.updates[i])
		rows += len(st.updates[i].Rows)
	}
	return out, nil
}
