package streamlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// ErrFutureToken is wrapped by TokenTime for a token not yet appended.
var ErrFutureToken = errors.New("token not yet appended")

// pageChunk is the size of the byte buffers a page copies rows into: rows
// of a page share a few large allocations instead of one each.
const pageChunk = 256 << 10

// ReadAfter returns the updates of the stream with after < token <= upTo, in
// token order, at most until limit rows are collected (never splitting an
// update, so a page always holds at least one). upTo above the current token
// reads up to the current token. A negative after is read as 0. A range whose
// start retention has removed gives a *replication.TokenTooOldError.
//
// The returned rows stay valid after later reads and trims. They may be
// shared with the log's tail cache and other readers: do not modify them.
func (l *Log) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]replication.Update, error) {
	return l.read(ctx, stream, after, upTo, limit, l.cacheBudget > 0)
}

// read is ReadAfter, with the tail cache used only if useCache (tests
// compare both paths).
func (l *Log) read(ctx context.Context, stream string, after, upTo int64, limit int, useCache bool) ([]replication.Update, error) {
	st, err := l.stream(stream)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("read stream %q: limit %d: the page size must be at least 1 row", stream, limit)
	}
	after = max(after, 0)
	// Everything through current is applied and durable (the syncer moves
	// current only after both), so the iterator below sees every token in
	// range unless retention removed it. Tokens past current may already
	// be applied but not yet synced; upper excludes them.
	upTo = min(upTo, st.current.Load())
	if after >= upTo {
		return nil, nil
	}
	if oldest := st.retained.Load().oldest; after < oldest-1 {
		return nil, &replication.TokenTooOldError{Stream: stream, Token: after, Oldest: oldest}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read stream %q: %w", stream, err)
	}

	if err := l.acquire(); err != nil {
		return nil, fmt.Errorf("read stream %q: %w", stream, err)
	}
	defer l.closeMu.RUnlock()
	if useCache {
		if updates, ok := st.tail.Read(after, upTo, limit); ok {
			return updates, nil
		}
	}
	return l.readStore(ctx, st, after, upTo, limit)
}

// readStore is ReadAfter's Pebble path, for ranges the tail cache does not
// hold. The caller holds closeMu for reading.
func (l *Log) readStore(ctx context.Context, st *streamState, after, upTo int64, limit int) ([]replication.Update, error) {
	stream := st.name
	lower := appendTokenKey(nil, st.prefix, after+1)
	upper := appendTokenKey(nil, st.prefix, upTo+1)
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("read stream %q: open iterator: %w", stream, err)
	}
	updates, err := l.readPage(ctx, st, it, after, upTo, limit)
	if cerr := it.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("read stream %q: close iterator: %w", stream, cerr)
	}
	if err != nil {
		return nil, err
	}
	return updates, nil
}

// ctxCheckEvery is about how many rows a page reads between context checks
// (each token counts as one more, so pages of many small tokens check too).
const ctxCheckEvery = 4096

// readPage reads whole tokens from it, one key each. Pebble's value memory
// is valid only until the iterator moves, so each value is copied once into
// the page's chunk buffer and its rows are subslices of that copy.
func (l *Log) readPage(ctx context.Context, st *streamState, it *pebble.Iterator, after, upTo int64, limit int) ([]replication.Update, error) {
	// Size the page's slices from what is known; append grows them if the
	// estimate is short, and earlier updates keep pointing at the old
	// (immutable) arrays, which stays correct.
	nTokens := min(upTo-after, int64(limit), 4096)
	updates := make([]replication.Update, 0, nTokens)
	rows := make([]json.RawMessage, 0, min(int64(limit)+64, 1<<16))
	var buf []byte

	expect := after + 1
	prefixLen := len(st.prefix)
	work := 0 // rows and tokens read since the last context check
	for valid := it.First(); valid; valid = it.Next() {
		// A page can be large (the caller picks limit); give up promptly
		// when the reader has gone, without paying for a check per token.
		if work >= ctxCheckEvery {
			work %= ctxCheckEvery
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("read stream %q: %w", st.name, err)
			}
		}
		token, err := decodeTokenKey(it.Key(), prefixLen)
		if err != nil {
			return nil, fmt.Errorf("read stream %q: %w (the log is damaged)", st.name, err)
		}
		if token != expect {
			if token > expect && expect == after+1 {
				// Retention removed the start of the range after the
				// oldest check above.
				return nil, &replication.TokenTooOldError{Stream: st.name, Token: after, Oldest: max(st.retained.Load().oldest, token)}
			}
			return nil, fmt.Errorf("read stream %q: expected token %d, found %d (the log is damaged)", st.name, expect, token)
		}
		if len(rows) >= limit {
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("read stream %q: token %d: %w", st.name, token, err)
		}
		h, err := decodeHeader(v)
		if err != nil {
			return nil, fmt.Errorf("read stream %q: token %d: %w (the log is damaged)", st.name, token, err)
		}
		body := v[headerLen:]
		if len(body) > cap(buf)-len(buf) {
			buf = make([]byte, 0, max(pageChunk, len(body)))
		}
		start := len(buf)
		buf = append(buf, body...)
		first := len(rows)
		rows, err = appendRows(rows, buf[start:], h.rows)
		if err != nil {
			return nil, fmt.Errorf("read stream %q: token %d %w (the log is damaged)", st.name, token, err)
		}
		updates = append(updates, replication.Update{Stream: st.name, Token: token, Time: h.time, Rows: rows[first:len(rows):len(rows)]})
		work += 1 + h.rows
		expect++
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read stream %q: %w", st.name, err)
	}
	if len(updates) == 0 {
		// after < upTo <= current, yet nothing: retention removed it all.
		return nil, &replication.TokenTooOldError{Stream: st.name, Token: after, Oldest: max(st.retained.Load().oldest, upTo+1)}
	}
	return updates, nil
}

// TokenTime returns when token of stream was published. Token 0 (nothing
// published yet) gives the zero time. The current token's time is always
// known; an older token that retention removed gives a
// *replication.TokenTooOldError; one not yet appended wraps ErrFutureToken.
func (l *Log) TokenTime(stream string, token int64) (time.Time, error) {
	st, err := l.stream(stream)
	if err != nil {
		return time.Time{}, fmt.Errorf("token time: %w", err)
	}
	cur := st.current.Load()
	switch {
	case token <= 0:
		return time.Time{}, nil
	case token > cur:
		return time.Time{}, fmt.Errorf("stream %q token %d: %w (current token is %d)", stream, token, ErrFutureToken, cur)
	case token == cur:
		// The common question ("how old is the newest row") needs no read,
		// and is answered even when retention removed the token. lastTime
		// is stored before current moves, so it is at least as new as
		// cur's; a racing append only makes it newer, which is harmless
		// for a lag estimate.
		return time.Unix(0, st.lastTime.Load()), nil
	}
	if oldest := st.retained.Load().oldest; token < oldest {
		return time.Time{}, &replication.TokenTooOldError{Stream: stream, Token: token, Oldest: oldest}
	}
	if t, ok := st.tail.TokenTime(token); ok {
		return t, nil
	}
	if err := l.acquire(); err != nil {
		return time.Time{}, fmt.Errorf("stream %q: %w", stream, err)
	}
	h, err := l.getHeader(st, token)
	l.closeMu.RUnlock()
	if errors.Is(err, pebble.ErrNotFound) {
		// Trimmed between the check and the read.
		return time.Time{}, &replication.TokenTooOldError{Stream: stream, Token: token, Oldest: st.retained.Load().oldest}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("stream %q: %w", stream, err)
	}
	return h.time, nil
}

// StreamStats is a stream's state for the API and metrics.
type StreamStats struct {
	Stream string
	// CurrentToken is the newest token (0 before the first append).
	CurrentToken int64
	// OldestToken is the oldest token still held; CurrentToken+1 when the
	// log holds none. A subscriber can continue from OldestToken-1 or later.
	OldestToken int64
	// Rows is the number of rows held.
	Rows int64
	// RowsPerSecond is the append rate averaged over the last 10 seconds.
	RowsPerSecond float64
	// LastAppend is the publish time of CurrentToken; zero if none.
	LastAppend time.Time
}

// Stats returns a stream's current state.
func (l *Log) Stats(stream string) (StreamStats, error) {
	st, err := l.stream(stream)
	if err != nil {
		return StreamStats{}, fmt.Errorf("stats: %w", err)
	}
	return l.stats(st), nil
}

// AllStats returns every stream's state, in Streams() order.
func (l *Log) AllStats() []StreamStats {
	out := make([]StreamStats, 0, len(l.order))
	for _, name := range l.order {
		out = append(out, l.stats(l.streams[name]))
	}
	return out
}

func (l *Log) stats(st *streamState) StreamStats {
	ret := st.retained.Load()
	s := StreamStats{
		Stream:        st.name,
		CurrentToken:  st.current.Load(),
		OldestToken:   ret.oldest,
		Rows:          max(st.cum.Load()-ret.trimmedCum, 0),
		RowsPerSecond: st.rate.PerSecond(l.now()),
	}
	if t := st.lastTime.Load(); t != 0 {
		s.LastAppend = time.Unix(0, t)
	}
	return s
}
