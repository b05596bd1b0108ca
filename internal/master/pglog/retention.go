package pglog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// trimTimeout bounds one trim's transaction.
const trimTimeout = 30 * time.Second

// Trim drops the stream's tokens up to and including through (clamped to
// the current token); below the oldest token held it is a no-op. The
// deletion and the new oldest token commit together, under the same fencing
// check as appends.
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

func (l *Log) trimLocked(st *streamState, through int64) error {
	if err := l.Err(); err != nil {
		return fmt.Errorf("trim stream %q: %w", st.name, err)
	}
	through = min(through, st.current.Load())
	ret := st.retained.Load()
	if through < ret.oldest {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), trimTimeout)
	defer cancel()
	next := retainedState{oldest: through + 1}
	// Move oldest before the rows go, so that a reader who finds rows
	// missing always finds an oldest that explains it; restored if the
	// trim fails.
	st.retained.Store(&next)
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT tcprepl_check_epoch($1)`, l.epoch); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT cum, published_ns, bytes_before + octet_length(rows) FROM tcprepl_token WHERE stream = $1 AND token = $2`, st.name, through).Scan(&next.trimmedCum, &next.trimmedTime, &next.trimmedBytes); err != nil {
			return fmt.Errorf("read token %d: %w", through, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM tcprepl_token WHERE stream = $1 AND token <= $2`, st.name, through); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE tcprepl_stream SET oldest = $2, trimmed_cum = $3, trimmed_time = $4, trimmed_bytes = $5 WHERE stream = $1`,
			st.name, next.oldest, next.trimmedCum, next.trimmedTime, next.trimmedBytes)
		return err
	})
	if err != nil {
		st.retained.Store(ret)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == fencedCode {
			// Another master took over: this one stops writing for good.
			err = l.fail(err)
		}
		return fmt.Errorf("trim stream %q through token %d: %w", st.name, through, err)
	}
	l.cacheBytes.Add(-st.tail.DropThrough(through))
	l.log.V(1).Info("trimmed stream", "stream", st.name, "through", through, "oldest", next.oldest)
	return nil
}

// ApplyRetention applies every stream's retention once.
func (l *Log) ApplyRetention() error {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	if err := l.closedErr(); err != nil {
		return fmt.Errorf("apply retention: %w", err)
	}
	var errs []error
	for _, name := range l.order {
		keep, ok := l.opts.Retention[name]
		if !ok {
			keep = l.opts.DefaultRetention
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

// retentionCut returns the newest token retention removes (oldest-1 when
// none), with the Pebble log's rules: MaxRows keeps the newest token,
// MaxAge may empty a quiet stream.
func (l *Log) retentionCut(st *streamState, keep Retention) (int64, error) {
	cur := st.current.Load()
	ret := st.retained.Load()
	cut := ret.oldest - 1
	if cur < ret.oldest {
		return cut, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), trimTimeout)
	defer cancel()
	if keep.MaxRows > 0 {
		if cum := st.cum.Load(); cum-ret.trimmedCum > keep.MaxRows {
			var k int64
			if err := l.pool.QueryRow(ctx, `SELECT min(token) FROM tcprepl_token WHERE stream = $1 AND cum >= $2`, st.name, cum-keep.MaxRows).Scan(&k); err != nil {
				return 0, fmt.Errorf("find the cut by rows: %w", err)
			}
			cut = max(cut, min(k, cur-1))
		}
	}
	if keep.MaxBytes > 0 {
		// Keep from the first token with at most MaxBytes from its start
		// to the end; none such: keep only the newest. The newest byte
		// count comes from the database, not the committer's.
		var j *int64
		err := l.pool.QueryRow(ctx, `SELECT min(token) FROM tcprepl_token WHERE stream = $1 AND token <= $3 AND bytes_before >= (
			SELECT bytes_before + octet_length(rows) FROM tcprepl_token WHERE stream = $1 AND token = $3) - $2`, st.name, keep.MaxBytes, cur).Scan(&j)
		if err != nil {
			return 0, fmt.Errorf("find the cut by bytes: %w", err)
		}
		if j == nil {
			cut = max(cut, cur-1)
		} else {
			cut = max(cut, min(*j-1, cur-1))
		}
	}
	if keep.MaxAge > 0 {
		limit := l.now().Add(-keep.MaxAge).UnixNano()
		var k *int64
		if err := l.pool.QueryRow(ctx, `SELECT min(token) FROM tcprepl_token WHERE stream = $1 AND published_ns >= $2`, st.name, limit).Scan(&k); err != nil {
			return 0, fmt.Errorf("find the cut by age: %w", err)
		}
		if k == nil {
			cut = max(cut, cur)
		} else {
			cut = max(cut, *k-1)
		}
	}
	return cut, nil
}

func (l *Log) trimLoop(every time.Duration) {
	defer close(l.trimDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.trimStop:
			return
		case <-t.C:
			if err := l.ApplyRetention(); err != nil && !errors.Is(err, ErrClosed) {
				l.log.Error(err, "applying retention failed; will retry", "interval", every)
			}
		}
	}
}
