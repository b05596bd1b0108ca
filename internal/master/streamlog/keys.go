package streamlog

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// Key layout (format 2). Everything of one stream sorts together, tokens in
// numeric order (big-endian), so one forward scan of one key range yields
// whole updates in order, one key per token:
//
//	'f'                         format record: the layout version (4 bytes, big-endian), formatV2
//	'r' stream 0x00 token(8)    one token: header, then its rows
//	'm' stream 0x00             retention state: oldest token held, rows before it
//	'i'                         the log's identity: 32 hex digits (identity.go)
//
// A token's value is its header followed by its rows in order, each row as
// its length (uvarint) and its bytes:
//
//	time(8) rows(4) cum(8) { uvarint(len(row)) row }*rows
//
// where time is the publish time (unix ns), rows the row count and cum the
// stream's rows ever appended through this token. The header is a fixed
// prefix, so reading a token's time or cum never decodes its rows.
//
// Format 1 (before the format record existed) stored one key per row,
// 'r' stream 0x00 token(8) slot(4); Open refuses such a directory.
//
// Stream names are restricted to [a-z][a-z0-9_]* by the catalogue, so the
// 0x00 separator cannot occur inside a name, and "a\x00..." sorts before
// "ab\x00...": the ranges of two streams never overlap.
const (
	formatPrefix = 'f'
	rowPrefix    = 'r'
	metaPrefix   = 'm'

	tokenLen  = 8
	headerLen = 8 + 4 + 8 // publish time (unix ns), rows in the token, cumulative rows through it
	metaLen   = 8 + 8 + 8 // oldest token held, cumulative rows before it, publish time of the token before it

	// formatV2 is the layout this package reads and writes: one key per
	// token. (Format 1, one key per row, had no format record.)
	formatV2  = 2
	formatLen = 4
)

// formatKey is the key of the format record.
var formatKey = []byte{formatPrefix}

func encodeFormat(version uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, version)
}

func decodeFormat(v []byte) (uint32, error) {
	if len(v) != formatLen {
		return 0, fmt.Errorf("malformed format record %q: want %d bytes, got %d", v, formatLen, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

// tokenKeyPrefix is 'r' stream 0x00.
func tokenKeyPrefix(stream string) []byte {
	k := make([]byte, 0, len(stream)+2)
	k = append(k, rowPrefix)
	k = append(k, stream...)
	return append(k, 0)
}

// tokenKeysEnd is the exclusive upper bound of every key that starts with
// prefix (a tokenKeyPrefix): the prefix with its 0x00 separator raised to
// 0x01.
func tokenKeysEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	end[len(end)-1]++
	return end
}

// appendTokenKey appends the key of token to dst, given the stream's token
// key prefix.
func appendTokenKey(dst, prefix []byte, token int64) []byte {
	dst = append(dst, prefix...)
	return binary.BigEndian.AppendUint64(dst, uint64(token))
}

// decodeTokenKey returns the token of a key of the stream whose prefix has
// length prefixLen.
func decodeTokenKey(key []byte, prefixLen int) (int64, error) {
	if len(key) != prefixLen+tokenLen {
		return 0, fmt.Errorf("malformed token key %q: want %d bytes, got %d", key, prefixLen+tokenLen, len(key))
	}
	return int64(binary.BigEndian.Uint64(key[prefixLen:])), nil
}

func metaKey(stream string) []byte {
	k := make([]byte, 0, len(stream)+2)
	k = append(k, metaPrefix)
	k = append(k, stream...)
	return append(k, 0)
}

// header is what the log keeps per token besides its rows.
type header struct {
	time time.Time
	rows int
	// cum counts the stream's rows ever appended through this token. The
	// difference of two headers' cum is the row count between them, which
	// lets retention by row count and Stats work without scanning rows.
	cum int64
}

func appendHeader(dst []byte, h header) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.time.UnixNano()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.rows))
	return binary.BigEndian.AppendUint64(dst, uint64(h.cum))
}

// appendTokenValue appends a token's value, its header and rows, to dst.
func appendTokenValue(dst []byte, h header, rows []json.RawMessage) []byte {
	dst = appendHeader(dst, h)
	for _, r := range rows {
		dst = binary.AppendUvarint(dst, uint64(len(r)))
		dst = append(dst, r...)
	}
	return dst
}

// tokenValueLen is the length of appendTokenValue's output for rows of
// rowBytes bytes in all.
func tokenValueLen(rows []json.RawMessage, rowBytes int) int {
	n := headerLen + rowBytes
	for _, r := range rows {
		n += uvarintLen(uint64(len(r)))
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// decodeHeader decodes the header at the start of a token's value; the rows
// that follow it are not looked at.
func decodeHeader(v []byte) (header, error) {
	if len(v) < headerLen {
		return header{}, fmt.Errorf("malformed token header: want %d bytes, got %d", headerLen, len(v))
	}
	return header{
		time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
		rows: int(binary.BigEndian.Uint32(v[8:])),
		cum:  int64(binary.BigEndian.Uint64(v[12:])),
	}, nil
}

// appendRows splits body, the part of a token's value after its header, into
// want rows and appends them to dst as subslices of body (capacity capped, so
// appending to one cannot overwrite the next). It fails unless body holds
// exactly want well-formed rows.
func appendRows(dst []json.RawMessage, body []byte, want int) ([]json.RawMessage, error) {
	for i := 0; i < want; i++ {
		if len(body) == 0 {
			return dst, fmt.Errorf("holds %d rows, its header says %d", i, want)
		}
		n, k := binary.Uvarint(body)
		if k <= 0 {
			return dst, fmt.Errorf("row %d: malformed row length", i)
		}
		body = body[k:]
		if n > uint64(len(body)) {
			return dst, fmt.Errorf("row %d: length %d runs past the end of the value (%d bytes left)", i, n, len(body))
		}
		dst = append(dst, body[:n:n])
		body = body[n:]
	}
	if len(body) != 0 {
		return dst, fmt.Errorf("holds %d bytes after the %d rows its header says", len(body), want)
	}
	return dst, nil
}

// meta is the durable retention state of a stream.
type meta struct {
	oldest     int64 // oldest token still held (current+1 when none is)
	trimmedCum int64 // rows appended before oldest, i.e. cum of token oldest-1
	// trimmedTime is the publish time (unix ns) of token oldest-1, so a
	// stream that retention emptied still knows when its current token was
	// published after a restart.
	trimmedTime int64
}

func encodeMeta(m meta) []byte {
	v := make([]byte, 0, metaLen)
	v = binary.BigEndian.AppendUint64(v, uint64(m.oldest))
	v = binary.BigEndian.AppendUint64(v, uint64(m.trimmedCum))
	return binary.BigEndian.AppendUint64(v, uint64(m.trimmedTime))
}

func decodeMeta(v []byte) (meta, error) {
	if len(v) != metaLen {
		return meta{}, fmt.Errorf("malformed retention record: want %d bytes, got %d", metaLen, len(v))
	}
	return meta{
		oldest:      int64(binary.BigEndian.Uint64(v)),
		trimmedCum:  int64(binary.BigEndian.Uint64(v[8:])),
		trimmedTime: int64(binary.BigEndian.Uint64(v[16:])),
	}, nil
}
