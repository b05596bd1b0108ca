package pglog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// ErrFutureToken is wrapped by TokenTime for a token not yet appended.
var ErrFutureToken = streamlog.ErrFutureToken

// readPageSQL reads one page: the tokens after $2 through $3 until the one
// that reaches $4 rows. The rows before a token are cum - n_rows, so the
// page holds every token that starts before the limit, counted from the
// first token's start; when that first token is gone (trimmed) the
// subquery is NULL and the page is empty.
const readPageSQL = `
SELECT token, published_ns, rows FROM tcprepl_token
WHERE stream = $1 AND token > $2 AND token <= $3
  AND cum - n_rows < (SELECT cum - n_rows FROM tcprepl_token WHERE stream = $1 AND token = $2 + 1) + $4
ORDER BY token`

// ReadAfter returns the updates of the stream with after < token <= upTo, in
// token order, until limit rows are collected (never splitting an update).
// Recent updates come from the tail cache; older ones from PostgreSQL, one
// query per page. A range whose start retention removed gives a
// *replication.TokenTooOldError.
func (l *Log) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]replication.Update, error) {
	return l.read(ctx, stream, after, upTo, limit, l.cacheBudget > 0)
}

func (l *Log) read(ctx context.Context, stream string, after, upTo int64, limit int, useCache bool) ([]replication.Update, error) {
	st, err := l.stream(stream)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("read stream %q: limit %d: the page size must be at least 1 row", stream, limit)
	}
	after = max(after, 0)
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
	if err := l.closedErr(); err != nil {
		return nil, fmt.Errorf("read stream %q: %w", stream, err)
	}
	if useCache {
		if updates, ok := st.tail.Read(after, upTo, limit); ok {
			return updates, nil
		}
	}
	rows, err := l.pool.Query(ctx, readPageSQL, stream, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("read stream %q after token %d: %w", stream, after, err)
	}
	var updates []replication.Update
	var (
		token, pub int64
		value      []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&token, &pub, &value}, func() error {
		want := after + int64(len(updates)) + 1
		if token != want {
			return fmt.Errorf("token %d missing (found %d): the tokens table was changed outside the master", want, token)
		}
		updates = append(updates, replication.Update{Stream: stream, Token: token, Rows: splitRows(value), Time: time.Unix(0, pub)})
		value = nil // the next row gets its own buffer: pages share no bytes
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read stream %q after token %d: %w", stream, after, err)
	}
	if len(updates) == 0 {
		// after < upTo <= current, yet nothing: retention removed it.
		return nil, &replication.TokenTooOldError{Stream: stream, Token: after, Oldest: max(st.retained.Load().oldest, upTo+1)}
	}
	return updates, nil
}

// splitRows splits a stored value (rows joined by '\n') into rows sharing
// its bytes.
func splitRows(value []byte) []json.RawMessage {
	n := bytes.Count(value, []byte{'\n'}) + 1
	out := make([]json.RawMessage, 0, n)
	for {
		i := bytes.IndexByte(value, '\n')
		if i < 0 {
			return append(out, value[:len(value):len(value)])
		}
		out = append(out, value[:i:i])
		value = value[i+1:]
	}
}

// TokenTime returns when token of stream was published: the zero time for
// token 0, a *replication.TokenTooOldError for a token retention removed,
// ErrFutureToken for one not yet appended.
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
		return time.Unix(0, st.lastTime.Load()), nil
	}
	if oldest := st.retained.Load().oldest; token < oldest {
		return time.Time{}, &replication.TokenTooOldError{Stream: stream, Token: token, Oldest: oldest}
	}
	if t, ok := st.tail.TokenTime(token); ok {
		return t, nil
	}
	if err := l.closedErr(); err != nil {
		return time.Time{}, fmt.Errorf("stream %q: %w", stream, err)
	}
	var pub int64
	err = l.pool.QueryRow(context.Background(), `SELECT published_ns FROM tcprepl_token WHERE stream = $1 AND token = $2`, stream, token).Scan(&pub)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, &replication.TokenTooOldError{Stream: stream, Token: token, Oldest: st.retained.Load().oldest}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("stream %q token %d: read publish time: %w", stream, token, err)
	}
	return time.Unix(0, pub), nil
}

// Stats returns a stream's current state.
func (l *Log) Stats(stream string) (StreamStats, error) {
	st, err := l.stream(stream)
	if err != nil {
		return StreamStats{}, fmt.Errorf("stats: %w", err)
	}
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
	return s, nil
}

func (l *Log) closedErr() error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return nil
}
