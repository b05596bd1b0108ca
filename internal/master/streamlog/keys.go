package streamlog

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Key layout. Everything of one stream sorts together, tokens in numeric
// order (big-endian), and within a token the header before its rows, so one
// forward scan of one key range yields whole updates in order:
//
//	'r' stream 0x00 token(8) slot(4)   slot 0: the token's header, slot i>0: row i-1
//	'm' stream 0x00                    retention state: oldest token held, rows before it
//
// Stream names are restricted to [a-z][a-z0-9_]* by the catalogue, so the
// 0x00 separator cannot occur inside a name, and "a\x00..." sorts before
// "ab\x00...": the ranges of two streams never overlap.
const (
	rowPrefix  = 'r'
	metaPrefix = 'm'

	tokenLen  = 8
	slotLen   = 4
	headerLen = 8 + 4 + 8 // publish time (unix ns), rows in the token, cumulative rows through it
	metaLen   = 8 + 8 + 8 // oldest token held, cumulative rows before it, publish time of the token before it
)

// rowKeyPrefix is 'r' stream 0x00.
func rowKeyPrefix(stream string) []byte {
	k := make([]byte, 0, len(stream)+2)
	k = append(k, rowPrefix)
	k = append(k, stream...)
	return append(k, 0)
}

// appendRowKey appends the key of slot in token to dst, given the stream's
// row key prefix.
func appendRowKey(dst, prefix []byte, token int64, slot uint32) []byte {
	dst = append(dst, prefix...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(token))
	return binary.BigEndian.AppendUint32(dst, slot)
}

// decodeRowKey splits a row key of the stream whose prefix has length
// prefixLen into its token and slot.
func decodeRowKey(key []byte, prefixLen int) (token int64, slot uint32, err error) {
	if len(key) != prefixLen+tokenLen+slotLen {
		return 0, 0, fmt.Errorf("malformed row key %q: want %d bytes, got %d", key, prefixLen+tokenLen+slotLen, len(key))
	}
	token = int64(binary.BigEndian.Uint64(key[prefixLen:]))
	slot = binary.BigEndian.Uint32(key[prefixLen+tokenLen:])
	return token, slot, nil
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

func decodeHeader(v []byte) (header, error) {
	if len(v) != headerLen {
		return header{}, fmt.Errorf("malformed token header: want %d bytes, got %d", headerLen, len(v))
	}
	return header{
		time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
		rows: int(binary.BigEndian.Uint32(v[8:])),
		cum:  int64(binary.BigEndian.Uint64(v[12:])),
	}, nil
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
