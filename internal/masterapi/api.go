// Package masterapi holds what the master shares with other processes: its
// configuration file (read by the master, rendered by the operator) and the
// JSON types of its HTTP API (served by the master, read by the probe, the
// benchmark and tests). It links no storage engine, so the operator and the
// probe can import it.
package masterapi

import (
	"encoding/json"
	"time"
)

// MaxRowsPerPublish is the most rows one publish (one token) may carry. A
// token reaches each subscriber as one item of its queue, which counts its
// rows against limits.maxPendingCommands (10000 by default): a batch near
// that limit would drop every subscriber as a slow consumer, so batches
// stay well below it. A master whose maxPendingCommands is under ten times
// this allows a tenth of that instead. Split larger publishes; the master's
// own effects (presence of a lost connection) are split the same way.
const MaxRowsPerPublish = 1000

// PublishRequest is the body of POST /v1/streams/{stream}/rows.
type PublishRequest struct {
	Rows []json.RawMessage `json:"rows"`
}

// PublishResponse is the reply once the rows are durable.
type PublishResponse struct {
	Token int64 `json:"token"`
}

// StreamStatus is one stream in GET /v1/streams. Name, Token and
// RowsPerSecond use the probe's StreamPosition field names.
type StreamStatus struct {
	Name  string `json:"name"`
	Token int64  `json:"token"`
	// OldestToken is the oldest token held (Token+1 when none is): a
	// subscriber can continue from OldestToken-1 or later.
	OldestToken   int64   `json:"oldestToken"`
	RowsPerSecond float64 `json:"rowsPerSecond"`
	// Rows is the number of rows the log holds for the stream.
	Rows int64 `json:"rows"`
	// Error is set when the log could not report the stream.
	Error string `json:"error,omitempty"`
}

// Connection is one entry of GET /v1/connections; the probe decodes the
// table into it.
type Connection struct {
	ID         uint64 `json:"id"`
	Name       string `json:"name"`
	RemoteAddr string `json:"remoteAddr"`
	// Identity is the verified client certificate's identity (see
	// docs/security.md); empty for an unauthenticated client, whose Name
	// is only what it claims. Transport is "tls" or "plaintext".
	Identity         string             `json:"identity,omitempty"`
	Transport        string             `json:"transport,omitempty"`
	State            string             `json:"state"`
	ConnectedSince   time.Time          `json:"connectedSince"`
	Streams          []ConnectionStream `json:"streams"`
	MaxSecondsBehind float64            `json:"maxSecondsBehind"`
	MaxTokensBehind  int64              `json:"maxTokensBehind"`
	PendingCommands  int                `json:"pendingCommands"`
	PendingBytes     int                `json:"pendingBytes"`
	CommandsIn       map[string]uint64  `json:"commandsIn"`
	CommandsOut      map[string]uint64  `json:"commandsOut"`
	BytesIn          uint64             `json:"bytesIn"`
	BytesOut         uint64             `json:"bytesOut"`
	LastReceived     time.Time          `json:"lastReceived"`
	UptimeSeconds    float64            `json:"uptimeSeconds"`
}

// ConnectionStream is one subscription of a connection.
type ConnectionStream struct {
	Name string `json:"name"`
	// State is the subscription's state (catching up, live).
	State string `json:"state"`
	// Token is the last token sent to the connection on this stream.
	Token         int64   `json:"token"`
	TokensBehind  int64   `json:"tokensBehind"`
	SecondsBehind float64 `json:"secondsBehind"`
}

// ConnectionsResponse is the body of GET /v1/connections.
type ConnectionsResponse struct {
	Now time.Time `json:"now"`
	// Total is the number of connections before offset and limit.
	Total       int          `json:"total"`
	Offset      int          `json:"offset"`
	Limit       int          `json:"limit"`
	Sort        string       `json:"sort"`
	Connections []Connection `json:"connections"`
}
