package master

import (
	"context"
	"encoding/json"
	"net"
	"time"

	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// The master assembles three parts written separately: the durable stream
// log, the row validator and the protocol server. It sees each through the
// small interface below, so that its own logic (publish ordering, command
// effects, the HTTP API) is tested with fakes, and the real parts are wired
// in one place (wire.go).

// StreamLog is the durable, ordered log of every stream (streamlog.Log).
type StreamLog interface {
	replication.Source
	// AppendEncoded stores rows already in Python json.dumps form as one
	// new token of stream and returns once they are durable. Tokens of one
	// stream are consecutive.
	AppendEncoded(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error)
	// Trim drops the tokens of stream up to and including through.
	Trim(stream string, through int64) error
	// Stats reports a stream's positions and recent rate.
	Stats(stream string) (streamlog.StreamStats, error)
	// TokenTime returns when token of stream was published.
	TokenTime(stream string, token int64) (time.Time, error)
	// OnDurable makes the log hand every update to h once it is durable
	// and visible to readers, before its append returns, in token order
	// per stream: the log, which group-commits concurrent appends, is what
	// knows durable order (streamlog.Log.OnDurable). h must not block.
	OnDurable(h func(replication.Update))
	// Close flushes and closes the log.
	Close() error
}

// RowValidator checks one row against its stream's shape; the error names
// the offending field. row is valid JSON in wire form, and fields are its
// elements when it is an array (rows.Catalogue.ValidateFields).
type RowValidator func(stream string, row json.RawMessage, fields [][]byte) error

// ReplicationServer is the protocol server the master fans rows out with.
type ReplicationServer interface {
	Serve(ln net.Listener) error
	Publish(u replication.Update)
	Connections() []ConnInfo
	Shutdown(ctx context.Context) error
}

// ConnInfo is one connection as the protocol server describes it.
type ConnInfo struct {
	ID         uint64
	Name       string
	RemoteAddr string
	// Identity is the client certificate's identity, empty when the
	// client is unauthenticated; Transport is "tls" or "plaintext".
	Identity       string
	Transport      string
	State          string
	ConnectedSince time.Time
	Subscriptions  []SubInfo
	PendingCmds    int
	PendingBytes   int
	CommandsIn     map[string]uint64
	CommandsOut    map[string]uint64
	BytesIn        uint64
	BytesOut       uint64
	LastReceived   time.Time
}

// SubInfo is one subscription of a connection.
type SubInfo struct {
	Stream string
	State  string
	// LastToken is the last token sent on the stream.
	LastToken int64
}
