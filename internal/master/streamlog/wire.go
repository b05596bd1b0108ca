package streamlog

import (
	"encoding/json"
	"fmt"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// appendWireForm appends row as it goes on the wire to dst: re-encoded the
// way Python's json.dumps does by default, so stored rows compare byte for
// byte with Synapse's and need no work when sent. It refuses anything but a
// JSON array, the shape of every row.
func appendWireForm(dst []byte, row json.RawMessage) ([]byte, error) {
	start := len(dst)
	out, err := replication.AppendPythonJSON(dst, row)
	if err != nil {
		return dst, fmt.Errorf("row is not valid JSON: %w", err)
	}
	if len(out) == start || out[start] != '[' {
		return dst, fmt.Errorf("a row must be a JSON array, got %s", preview(out[start:]))
	}
	return out, nil
}

// preview shortens a value for an error message.
func preview(b []byte) string {
	const limit = 40
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}
