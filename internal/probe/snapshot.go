// Package probe observes a master the way a worker does: it connects over the
// replication protocol, follows every stream's position, times heartbeats
// relayed through the master, and reads the master's connection table.
package probe

import (
	"errors"
	"time"
)

// The probe's failures are distinct so that callers (the operator's status,
// the CLI's exit message) can say exactly what went wrong.
var (
	// ErrUnreachable: the replication port could not be dialed or the
	// connection was lost.
	ErrUnreachable = errors.New("master unreachable")
	// ErrWrongServerName: the master announced a different SERVER name.
	ErrWrongServerName = errors.New("wrong server name")
	// ErrProtocol: the master sent something the protocol does not allow.
	ErrProtocol = errors.New("protocol error")
	// ErrHTTPUnreachable: the master's HTTP API (connection table) could not
	// be read; positions from the protocol are still valid.
	ErrHTTPUnreachable = errors.New("master HTTP API unreachable")
	// ErrLogReset begins the warning (Snapshot.Warnings) that the master's
	// log was reset or replaced while the probe watched it: a stream's
	// token went backwards, or its log id changed. Workers resuming from
	// positions in the old log would skip rows.
	ErrLogReset = errors.New("master log reset")
)

// Snapshot is what the probe knows about one master at one moment.
type Snapshot struct {
	// MeasuredAt is when the snapshot was taken.
	MeasuredAt time.Time `json:"measuredAt"`
	// Reachable is true while the probe holds a live, caught-up connection.
	Reachable bool `json:"reachable"`
	// Error explains why the master is not reachable or not fully observed;
	// it wraps one of the Err* values above. Nil when all is well.
	Error error `json:"-"`
	// ErrorMessage is Error's text, for JSON output.
	ErrorMessage string `json:"error,omitempty"`
	// Warnings are facts a reader should act on that do not make the
	// master unreachable, e.g. that its log was reset (ErrLogReset).
	Warnings []string `json:"warnings,omitempty"`
	// ServerName is the name the master announced with SERVER.
	ServerName string `json:"serverName,omitempty"`
	// Address is the replication address the probe dials (host:port).
	Address string `json:"address,omitempty"`
	// LogID is the identity of the master's log (tcprepl masters announce
	// it; empty for a Synapse master). LogChangedFrom is the previous id
	// when it changed while the probe watched.
	LogID          string `json:"logId,omitempty"`
	LogChangedFrom string `json:"logChangedFrom,omitempty"`
	// Streams holds each stream's position, sorted by name.
	Streams []StreamPosition `json:"streams"`
	// Heartbeat is the round-trip latency of INVALIDATE_CACHE heartbeats
	// relayed back on the caches stream.
	Heartbeat HeartbeatStats `json:"heartbeat"`
	// ConnectionsAvailable is false when the master has no connection table
	// (its HTTP API is unreachable, or it is not tcprepl, e.g. Synapse).
	ConnectionsAvailable bool `json:"connectionsAvailable"`
	// Connections lists the master's client connections, the probe's own
	// excluded.
	Connections []Connection `json:"connections,omitempty"`
}

// StreamPosition is one stream's position as the probe last saw it.
type StreamPosition struct {
	Name  string `json:"name"`
	Token int64  `json:"token"`
	// RowsPerSecond is the recent rate of rows on the stream.
	RowsPerSecond float64 `json:"rowsPerSecond"`
	// OldestToken is the oldest token the master still holds (from its
	// HTTP API; 0 when unknown): a worker at OldestToken-1 or later can
	// catch up, one further behind cannot.
	OldestToken int64 `json:"oldestToken,omitempty"`
	// WentBackFrom, when set, is the token the stream had before its token
	// went backwards: the master's log was reset or replaced.
	WentBackFrom int64 `json:"wentBackFrom,omitempty"`
}

// HeartbeatStats summarises heartbeat round trips over a recent window.
type HeartbeatStats struct {
	Last    time.Duration `json:"last"`
	P50     time.Duration `json:"p50"`
	P99     time.Duration `json:"p99"`
	Max     time.Duration `json:"max"`
	Samples int           `json:"samples"`
	// LastSeen is when a heartbeat last came back; zero if none yet.
	LastSeen time.Time `json:"lastSeen"`
	// Stale is true when a heartbeat has been outstanding longer than the
	// probe's stale threshold.
	Stale bool `json:"stale"`
}

// Connection is what the probe reports of one client connection in the
// master's connection table: the entry's identity and lag, not its
// counters, which move all the time. The table's wire form is
// masterapi.Connection.
type Connection struct {
	ID         uint64    `json:"id"`
	Name       string    `json:"name"`
	RemoteAddr string    `json:"remoteAddr"`
	State      string    `json:"state"`
	Since      time.Time `json:"connectedSince"`
	// Streams holds the connection's subscriptions.
	Streams []ConnectionStream `json:"streams"`
	// MaxSecondsBehind is the worst lag over the connection's streams.
	MaxSecondsBehind float64 `json:"maxSecondsBehind"`
}

// ConnectionStream is one subscription of one connection.
type ConnectionStream struct {
	Name string `json:"name"`
	// Token is the last token sent to the connection on this stream.
	Token         int64   `json:"token"`
	TokensBehind  int64   `json:"tokensBehind"`
	SecondsBehind float64 `json:"secondsBehind"`
}
