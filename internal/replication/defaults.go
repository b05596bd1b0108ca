package replication

import "time"

// The protocol's defaults (docs/protocol.md), shared by the server, the
// client and the master's configuration: the one place they are written.
const (
	// DefaultMaxLineLength is the longest line, without its newline, that
	// either side accepts or sends.
	DefaultMaxLineLength = 16384
	// DefaultMaxPendingCommands is the slow-consumer limit in commands.
	DefaultMaxPendingCommands = 10000
	// DefaultPingInterval is how often a side that has sent nothing sends
	// PING.
	DefaultPingInterval = 5 * time.Second
	// DefaultPingTimeout is how long a peer that has pinged may stay silent.
	DefaultPingTimeout = 25 * time.Second
	// DefaultWriteTimeout bounds one flush of a connection's queue.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultCatchUpPageRows is the most rows a catch-up page reads.
	DefaultCatchUpPageRows = 1000
	// DefaultMaxPendingBytes is the slow-consumer limit in bytes queued for
	// one connection (beyond the write in progress), like Redis's
	// client-output-buffer-limit: 10000 rows of 800 bytes.
	DefaultMaxPendingBytes = 8 << 20
	// DefaultMaxCatchUpBytes bounds the catch-up pages held at once by all
	// of a server's connections together (read and not yet written).
	DefaultMaxCatchUpBytes = 64 << 20
	// DefaultCatchUpPageBytes is the size a catch-up page aims at: pages
	// shrink (in rows) when rows are large.
	DefaultCatchUpPageBytes = 1 << 20
)

// Reconnect and retry delays (see internal/backoff).
const (
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = time.Second
)
