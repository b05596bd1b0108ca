package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Update is one token of one stream: the rows that a single write produced.
// More than one row makes a batch, sent as `RDATA <stream> batch ...` lines
// followed by one line carrying the numeric token.
type Update struct {
	Stream string
	Token  int64
	// Rows holds each row's JSON array, exactly as it will be put on the wire.
	Rows []json.RawMessage
	// Time is when the master accepted the write; zero when unknown.
	Time time.Time
}

// Source is how the server reads the streams it publishes. Storage (the
// master's stream log, or the in-memory source in tests) implements it.
//
// The server relies on one ordering rule: a token reported by CurrentToken
// is readable through ReadAfter, and Server.Publish for an update is called
// only after the update is visible through the Source.
type Source interface {
	// Streams lists the streams served, in a stable order; REPLICATE ALL
	// subscribes to each of them.
	Streams() []string
	// CurrentToken returns the newest token of the stream. An unknown stream
	// gives an error wrapping ErrUnknownStream.
	CurrentToken(stream string) (int64, error)
	// ReadAfter returns the updates of the stream with after < token <= upTo,
	// in token order. It stops once it has collected limit rows or more, but
	// never splits an update, so one page always makes progress. A token the
	// log no longer covers gives a *TokenTooOldError.
	ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]Update, error)
}

// ErrUnknownStream is wrapped by errors for a stream the server does not publish.
var ErrUnknownStream = errors.New("unknown stream")

// TokenTooOldError says a subscription asked for rows that retention has
// already removed.
type TokenTooOldError struct {
	Stream string
	// Token is the token the subscriber asked to continue from.
	Token int64
	// Oldest is the oldest token the log still holds; a subscriber can
	// continue from Oldest-1 or later.
	Oldest int64
}

func (e *TokenTooOldError) Error() string {
	return fmt.Sprintf("stream %s: token %d is older than retention; the oldest token still held is %d", e.Stream, e.Token, e.Oldest)
}

// TokenAheadError says a subscription asked for rows after a token the
// stream has not reached. Tokens are durable before anyone sees them, so
// this happens only when the server's log was replaced (a new or ephemeral
// data directory) or the token came from another server. Serving it would
// skip every row up to that token without a word, so the server refuses.
type TokenAheadError struct {
	Stream string
	// Token is the token the subscriber asked to continue from.
	Token int64
	// Current is the stream's newest token.
	Current int64
}

func (e *TokenAheadError) Error() string {
	return fmt.Sprintf("stream %s: token %d is ahead of this server's newest token %d; its log was reset or the token came from another server, and rows %d..%d would be skipped: reset the subscriber's saved position to resync", e.Stream, e.Token, e.Current, e.Current+1, e.Token)
}
