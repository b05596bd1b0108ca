// Package synapse watches a Synapse deployment of today (v1.67 and later):
// it subscribes to the Redis pub/sub channel Synapse's processes already use
// for replication, parses today's dialect of the replication commands, and
// keeps, per stream and per writer instance, what a person needs to see:
// positions, last advance, rates, gaps and resets, the processes that answer
// REPLICATE, and the configured stream writers that never announce.
//
// The watcher never publishes anything but `REPLICATE ` (which every Synapse
// process answers by re-announcing its positions), so it is safe to point at
// a production deployment.
package synapse

import (
	"errors"
	"time"
)

// The watcher's failures are distinct so that callers (the operator's status
// reasons, the CLI's exit message) can say exactly what went wrong.
var (
	// ErrRedisUnreachable: the Redis address could not be dialed or the
	// connection was lost.
	ErrRedisUnreachable = errors.New("redis unreachable")
	// ErrRedisAuth: Redis refused AUTH (wrong password or user) or SELECT.
	ErrRedisAuth = errors.New("redis authentication failed")
	// ErrNothingHeard: subscribed, solicited positions, and heard nothing at
	// all on the channel (wrong server name, or no Synapse process running).
	ErrNothingHeard = errors.New("nothing heard on the replication channel")
)

// Snapshot is what a Watcher knows about one Synapse deployment at one
// moment. It is a copy: callers may keep and modify it.
type Snapshot struct {
	// MeasuredAt is when the snapshot was taken.
	MeasuredAt time.Time `json:"measuredAt"`
	// ServerName is the homeserver's server_name, which is also the channel.
	ServerName string `json:"serverName"`
	// Subscribed is true while the watcher holds a live Redis subscription.
	Subscribed bool `json:"subscribed"`
	// Error explains why the watcher is not subscribed or not fully
	// observing; it wraps one of the Err* values above or a Redis error.
	// Nil when all is well.
	Error error `json:"-"`
	// ErrorMessage is Error's text, for JSON output.
	ErrorMessage string `json:"error,omitempty"`
	// LastMessageAt is when anything was last received on the channel.
	LastMessageAt time.Time `json:"lastMessageAt,omitzero"`
	// LastSolicitAt is when the watcher last published `REPLICATE `.
	LastSolicitAt time.Time `json:"lastSolicitAt,omitzero"`
	// Streams holds every stream seen or configured, sorted by name.
	Streams []Stream `json:"streams"`
	// Responders are the processes (by instance name) that announced at
	// least one position after the last REPLICATE, sorted.
	Responders []string `json:"responders"`
	// MissingWriters are configured writers (stream_writers) that have not
	// announced their stream since the last REPLICATE settled: the check for
	// element-hq/synapse#20080. Sorted by stream, then instance.
	MissingWriters []WriterRef `json:"missingWriters,omitempty"`
	// UnexpectedWriters are instances announcing a stream they are not
	// configured to write (only reported when stream_writers is known).
	UnexpectedWriters []WriterRef `json:"unexpectedWriters,omitempty"`
	// Commands counts the commands received, by name; unknown names are
	// counted under "UNKNOWN" and lines that failed to parse under
	// "MALFORMED".
	Commands map[string]uint64 `json:"commands"`
	// CommandsPerSecond is the recent rate of commands on the main channel.
	CommandsPerSecond float64 `json:"commandsPerSecond"`
	// UserIPPerSecond is the recent rate of USER_IP commands on
	// `<server_name>/USER_IP`.
	UserIPPerSecond float64 `json:"userIPPerSecond"`
	// Overflow counts commands ignored because they named a stream or an
	// instance beyond the watcher's Limits (a channel flooded with random
	// names); non-zero means the tables above are incomplete.
	Overflow uint64 `json:"overflow,omitempty"`
	// Redis is what Redis itself says about the pub/sub side.
	Redis RedisStats `json:"redis"`
}

// Stream is one replication stream and every instance that writes it.
type Stream struct {
	Name string `json:"name"`
	// Writers are the instances seen writing this stream (and the configured
	// ones, with Announced false until they speak), sorted by instance.
	Writers []Writer `json:"writers"`
	// MinPosition and MaxPosition are the lowest and highest position among
	// the writers that announced; Spread is their difference.
	MinPosition int64 `json:"minPosition"`
	MaxPosition int64 `json:"maxPosition"`
	Spread      int64 `json:"spread"`
}

// Writer is one instance's view of one stream.
type Writer struct {
	Instance string `json:"instance"`
	// Announced is true once the instance sent RDATA or POSITION for the
	// stream.
	Announced bool `json:"announced"`
	// Configured is true when stream_writers names this instance for the
	// stream (or the stream has no configured writers and this is "master").
	Configured bool `json:"configured"`
	// Position is the highest numeric RDATA token or POSITION new_token seen
	// since the last reset.
	Position int64 `json:"position"`
	// LastAdvanceAt is when Position last grew; zero if never seen.
	LastAdvanceAt time.Time `json:"lastAdvanceAt,omitzero"`
	// LastSeenAt is when the instance last sent anything for this stream.
	LastSeenAt time.Time `json:"lastSeenAt,omitzero"`
	// RowsPerSecond and CommandsPerSecond are recent rates.
	RowsPerSecond     float64 `json:"rowsPerSecond"`
	CommandsPerSecond float64 `json:"commandsPerSecond"`
	// Gaps counts POSITIONs whose prev_token was ahead of the last position
	// seen from this writer (something was missed).
	Gaps uint64 `json:"gaps"`
	// Resets counts times the position went back (a writer restarted).
	Resets uint64 `json:"resets"`
}

// WriterRef names one (stream, instance) pair.
type WriterRef struct {
	Stream   string `json:"stream"`
	Instance string `json:"instance"`
}

// RedisStats is what Redis reports about the pub/sub side of the deployment.
type RedisStats struct {
	// Subscribers is `PUBSUB NUMSUB <server_name>`, the watcher included.
	Subscribers int64 `json:"subscribers"`
	// Clients lists each pub/sub client's output buffer (`CLIENT LIST TYPE
	// pubsub`), largest first.
	Clients []PubSubClient `json:"clients,omitempty"`
	// OutputBufferHardLimitBytes, OutputBufferSoftLimitBytes and
	// OutputBufferSoftSeconds are the pubsub class of
	// `CONFIG GET client-output-buffer-limit`; zero means no limit.
	OutputBufferHardLimitBytes int64 `json:"outputBufferHardLimitBytes"`
	OutputBufferSoftLimitBytes int64 `json:"outputBufferSoftLimitBytes"`
	OutputBufferSoftSeconds    int64 `json:"outputBufferSoftSeconds"`
	// Unavailable says why some of the above could not be read (for example
	// an ACL that forbids CLIENT or CONFIG); the rest is still valid.
	Unavailable string `json:"unavailable,omitempty"`
}

// PubSubClient is one Redis pub/sub connection.
type PubSubClient struct {
	ID   int64  `json:"id"`
	Name string `json:"name,omitempty"`
	Addr string `json:"addr"`
	// OutputBufferBytes is the client's `omem`.
	OutputBufferBytes int64 `json:"outputBufferBytes"`
	// Subscriptions is the client's `sub` count.
	Subscriptions int64 `json:"subscriptions"`
}
