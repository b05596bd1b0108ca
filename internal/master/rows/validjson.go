package rows

import (
	"encoding/binary"
	"unicode/utf8"
)

// maxDepth bounds nesting, like the replication package's JSON encoder, so
// a row of "[[[[..." cannot exhaust the stack and every row Validate
// accepts is one the log can re-encode.
const maxDepth = 1000

// rowScan is the outcome of scanRow.
type rowScan uint8

const (
	rowOK       rowScan = iota
	rowNotJSON          // not one valid UTF-8 JSON text
	rowNotArray         // valid JSON, but not an array
	rowTooDeep          // nested deeper than maxDepth
)

// scanRow validates b as one JSON text (RFC 8259, UTF-8 only) in a single
// pass and, if it is an array, appends its elements to dst. It replaces
// utf8.Valid + json.Valid + a split, which cost three passes; the fuzz
// target checks it agrees with encoding/json.
func scanRow(b []byte, dst [][]byte) ([][]byte, rowScan) {
	s := jsonScanner{b: b}
	s.skipSpace()
	if s.i < len(b) && b[s.i] == '[' {
		s.i++
		s.skipSpace()
		if s.i < len(b) && b[s.i] == ']' {
			s.i++
		} else {
			for {
				start := s.i
				if !s.value(1) {
					return dst, s.failure()
				}
				dst = append(dst, b[start:s.i])
				s.skipSpace()
				if s.i >= len(b) {
					return dst, rowNotJSON
				}
				if b[s.i] == ']' {
					s.i++
					break
				}
				if b[s.i] != ',' {
					return dst, rowNotJSON
				}
				s.i++
				s.skipSpace()
			}
		}
		s.skipSpace()
		if s.i != len(b) {
			return dst, rowNotJSON
		}
		return dst, rowOK
	}
	if !s.value(0) {
		return dst, s.failure()
	}
	s.skipSpace()
	if s.i != len(b) {
		return dst, rowNotJSON
	}
	return dst, rowNotArray
}

type jsonScanner struct {
	b       []byte
	i       int
	tooDeep bool
}

func (s *jsonScanner) failure() rowScan {
	if s.tooDeep {
		return rowTooDeep
	}
	return rowNotJSON
}

func (s *jsonScanner) skipSpace() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// value validates the value at s.i and moves past it.
func (s *jsonScanner) value(depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '[' || c == '{':
		if depth >= maxDepth {
			s.tooDeep = true
			return false
		}
		return s.container(c, depth+1)
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

func (s *jsonScanner) container(open byte, depth int) bool {
	closeCh := byte(']')
	if open == '{' {
		closeCh = '}'
	}
	s.i++
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == closeCh {
		s.i++
		return true
	}
	for {
		if open == '{' {
			if s.i >= len(s.b) || s.b[s.i] != '"' || !s.str() {
				return false
			}
			s.skipSpace()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return false
			}
			s.i++
			s.skipSpace()
		}
		if !s.value(depth) {
			return false
		}
		s.skipSpace()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case closeCh:
			s.i++
			return true
		case ',':
			s.i++
			s.skipSpace()
		default:
			return false
		}
	}
}

// str validates a string starting at its opening quote.
func (s *jsonScanner) str() bool {
	b := s.b
	i := s.i + 1
	for i < len(b) {
		// Skip eight plain bytes at a time: printable ASCII other than
		// '"' and '\\', which is most of a typical string.
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		// Then byte by byte up to the next byte that needs a look.
		for i < len(b) && b[i] >= 0x20 && b[i] < utf8.RuneSelf && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return true
		case c == '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return false
				}
				i += 6
			default:
				return false
			}
		case c < 0x20:
			return false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return false
			}
			i += size
		}
	}
	return false
}

// plain8 reports whether all eight bytes of w are printable ASCII other
// than '"' and '\\': bytes str can step over without looking closer. Each
// term has the high bit of a byte set exactly where (or, with borrows,
// only after) a byte is below 0x20, is '"', is '\\' or is not ASCII; any
// set bit means "look at these bytes one by one", so it is exact.
func plain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := w ^ (ones * '"')
	bslash := w ^ (ones * '\\')
	special := (w - ones*0x20) &^ w
	special |= (quote - ones) &^ quote
	special |= (bslash - ones) &^ bslash
	special |= w
	return special&highs == 0
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (s *jsonScanner) literal(word string) bool {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	s.i += len(word)
	return true
}

// number validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() bool {
	b, i := s.b, s.i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	s.i = i
	return true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
