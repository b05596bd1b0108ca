package streamlog

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Trim drops the stream's tokens up to and including through (clamped to
// the current token). The master calls it for FEDERATION_ACK. Trimming below
// the oldest token held is a no-op. The new oldest token is written in the
// same atomic batch as the deletion; it becomes durable with the next
// synced write (or Close).
func (l *Log) Trim(stream string, through int64) error {
	st, err := l.stream(stream)
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	if err := l.closedErr(); err != nil {
		return fmt.Errorf("trim stream %q: %w", stream, err)
	}
	return l.trimLocked(st, through)
}

// trimLocked deletes tokens [oldest, through] of st. Caller holds trimMu.
func (l *Log) trimLocked(st *streamState, through int64) error {
	if err := l.Err(); err != nil {
		// Nothing more may be written to a log whose commit failed.
		return fmt.Errorf("trim stream %q: %w", st.name, err)
	}
	through = min(through, st.current.Load())
	ret := st.retained.Load()
	if through < ret.oldest {
		return nil
	}
	h, err := l.getHeader(st, through)
	if err != nil {
		return fmt.Errorf("trim stream %q through token %d: %w", st.name, through, err)
	}
	next := meta{oldest: through + 1, trimmedCum: h.cum, trimmedTime: h.time.UnixNano()}
	b := l.db.NewBatch()
	defer func() { _ = b.Close() }() // only fails on a batch already closed
	_ = b.DeleteRange(appendTokenKey(nil, st.prefix, ret.oldest), appendTokenKey(nil, st.prefix, through+1), nil)
	_ = b.Set(metaKey(st.name), encodeMeta(next), nil)
	// Move oldest before the rows go, so that a reader who finds rows
	// missing always finds an oldest that explains it. Until the commit,
	// readers are refused rows that still exist, which is harmless.
	st.retained.Store(&next)
	// Not synced: the deletion and the new oldest token are one atomic
	// batch, so a crash before the next fsync (any append's) can only
	// bring back rows that were valid anyway, with a matching oldest
	// token. FEDERATION_ACK trims often; a sync each would cost a disk
	// round trip per acknowledgement.
	if err := b.Commit(pebble.NoSync); err != nil {
		st.retained.Store(ret)
		return fmt.Errorf("trim stream %q through token %d: %w (the data volume may be full or failing)", st.name, through, err)
	}
	l.cacheBytes.Add(-st.tail.DropThrough(through))
	l.log.V(1).Info("trimmed stream", "stream", st.name, "through", through, "oldest", next.oldest)
	return nil
}

// ApplyRetention applies every stream's retention once. The background
// trimmer calls it every TrimInterval; it is exported for callers that
// disable the trimmer and for tests with an injected clock.
func (l *Log) ApplyRetention() error {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	if err := l.closedErr(); err != nil {
		return fmt.Errorf("apply retention: %w", err)
	}
	var errs []error
	for _, name := range l.order {
		keep, ok := l.retention[name]
		if !ok {
			keep = l.defaultKeep
		}
		if keep == (Retention{}) {
			continue
		}
		st := l.streams[name]
		through, err := l.retentionCut(st, keep)
		if err != nil {
			errs = append(errs, fmt.Errorf("apply retention to stream %q: %w", name, err))
			continue
		}
		if err := l.trimLocked(st, through); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// retentionCut returns the newest token retention removes (oldest-1 when it
// removes none). Tokens are dense between oldest and current, and both
// cumulative row counts and publish times grow with the token, so each bound
// is a binary search over point reads of headers.
func (l *Log) retentionCut(st *streamState, keep Retention) (int64, error) {
	cur := st.current.Load()
	ret := st.retained.Load()
	cut := ret.oldest - 1
	n := int(cur - ret.oldest + 1) // tokens held
	if n <= 0 {
		return cut, nil
	}
	var searchErr error
	header := func(i int) header {
		if searchErr != nil {
			return header{}
		}
		h, err := l.getHeader(st, ret.oldest+int64(i))
		if err != nil {
			searchErr = err
		}
		return h
	}
	if keep.MaxRows > 0 {
		if cum := st.cum.Load(); cum-ret.trimmedCum > keep.MaxRows {
			// Smallest i with cum(i) >= cum - MaxRows: dropping through
			// token oldest+i leaves at most MaxRows rows. The newest token
			// is always kept.
			i := sort.Search(n-1, func(i int) bool { return header(i).cum >= cum-keep.MaxRows })
			cut = max(cut, ret.oldest+int64(i))
			cut = min(cut, cur-1)
		}
	}
	if keep.MaxBytes > 0 {
		byteCut, err := l.bytesCut(st, ret.oldest, n, keep.MaxBytes)
		if err != nil {
			return 0, err
		}
		cut = max(cut, min(byteCut, cur-1))
	}
	if keep.MaxAge > 0 {
		limit := l.now().Add(-keep.MaxAge)
		// First token not older than the limit; everything before it goes.
		i := sort.Search(n, func(i int) bool { return !header(i).time.Before(limit) })
		cut = max(cut, ret.oldest+int64(i)-1)
	}
	if searchErr != nil {
		return 0, searchErr
	}
	return cut, nil
}

// bytesCut returns the newest token to drop so that the stream's tokens
// from the next one on take at most maxBytes on disk (oldest-1 when they
// already do). n tokens are held from oldest on.
func (l *Log) bytesCut(st *streamState, oldest int64, n int, maxBytes int64) (int64, error) {
	end := tokenKeysEnd(st.prefix)
	var searchErr error
	usageFrom := func(token int64) uint64 {
		if searchErr != nil {
			return 0
		}
		u, err := l.db.EstimateDiskUsage(appendTokenKey(nil, st.prefix, token), end)
		if err != nil {
			searchErr = fmt.Errorf("estimate disk usage from token %d: %w", token, err)
		}
		return u
	}
	if usageFrom(oldest) <= uint64(maxBytes) {
		return oldest - 1, searchErr
	}
	// Usage from token oldest+i shrinks as i grows: find the first i
	// that fits and drop everything before it.
	i := sort.Search(n, func(i int) bool { return usageFrom(oldest+int64(i)) <= uint64(maxBytes) })
	if searchErr != nil {
		return 0, searchErr
	}
	return oldest + int64(i) - 1, nil
}

// trimLoop applies retention every trimEvery until Close.
func (l *Log) trimLoop() {
	defer close(l.trimDone)
	t := time.NewTicker(l.trimEvery)
	defer t.Stop()
	for {
		select {
		case <-l.trimStop:
			return
		case <-t.C:
			if err := l.ApplyRetention(); err != nil && !errors.Is(err, ErrClosed) {
				l.log.Error(err, "applying retention failed; will retry", "interval", l.trimEvery)
			}
		}
	}
}

func (l *Log) closedErr() error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return nil
}
