package replication

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ErrRowTooLong is wrapped by CheckRDATARow for a row whose RDATA line could
// be longer than the line limit.
var ErrRowTooLong = errors.New("row too long for one RDATA line")

var (
	errRowEmpty   = errors.New("row is empty")
	errRowNewline = errors.New("row contains a newline or carriage return")
)

// maxRDATAOverhead is the longest RDATA line without its stream name and
// row: "RDATA ", a space, the longest token (an int64's 19 digits) and a
// space. "batch" is shorter, so a row within it fits whatever token and
// place in its batch it gets.
var maxRDATAOverhead = len("RDATA ") + 1 + len(strconv.FormatInt(math.MaxInt64, 10)) + 1

// CheckRDATARow reports whether row can go on the wire as one RDATA line of
// stream, whatever its token, within maxLineLength bytes (0 means
// DefaultMaxLineLength): it must be non-empty, hold no line break, and fit.
// It is the one definition of "a row must fit one RDATA line": the master
// refuses such a row before storing it, the stream log before writing it,
// and the server skips it rather than send a broken line.
func CheckRDATARow(stream string, row []byte, maxLineLength int) error {
	if maxLineLength <= 0 {
		maxLineLength = DefaultMaxLineLength
	}
	if len(row) == 0 {
		return errRowEmpty
	}
	if line := maxRDATAOverhead + len(stream) + len(row); line > maxLineLength {
		return fmt.Errorf("%w: the row is %d bytes, so its RDATA line could be %d bytes, over the line limit of %d bytes (limits.maxLineLength); split the data over smaller rows", ErrRowTooLong, len(row), line, maxLineLength)
	}
	if bytes.IndexByte(row, '\n') >= 0 || bytes.IndexByte(row, '\r') >= 0 {
		return errRowNewline
	}
	return nil
}
