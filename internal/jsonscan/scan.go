// Package jsonscan validates and splits JSON text (RFC 8259, UTF-8 only)
// without decoding it. It is the one JSON scanner of tcprepl: the Python-form
// encoder (internal/replication), the receive-side check of every RDATA row,
// the row catalogue (internal/master/rows) and the publish handler all use
// its grammar, its depth limit and its string scanner.
//
// Two kinds of operation are offered. Valid and SplitArray check everything
// (grammar, UTF-8, depth) and are for bytes from the outside. SkipValue and
// AppendElements only find where values end and are for bytes already
// checked (or written by the encoder); on anything else they stay within the
// input and return some boundary, never panic.
package jsonscan

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects accepted: a value
// inside MaxDepth open containers is fine, a container at that depth is not.
// It keeps a hostile "[[[[..." from exhausting a stack, and rows of the
// protocol nest a handful of levels. Python's own json module stops near
// the same depth (its recursion limit).
const MaxDepth = 1000

// ErrTooDeep is returned for JSON nested deeper than MaxDepth.
var ErrTooDeep = errors.New("JSON nested more than 1000 levels deep")

// Result is the outcome of SplitArray.
type Result uint8

const (
	// OK: one valid JSON array; its elements were appended.
	OK Result = iota
	// NotJSON: not one valid UTF-8 JSON text.
	NotJSON
	// NotArray: valid JSON, but not an array.
	NotArray
	// TooDeep: nested deeper than MaxDepth.
	TooDeep
)

// Valid reports whether b is one valid JSON value, surrounding whitespace
// allowed. It allocates nothing for nesting up to 64 levels and checks the
// UTF-8 of strings as it goes (outside strings only ASCII is valid JSON),
// so one pass is the whole check.
func Valid(b []byte) bool {
	i := skipSpace(b, 0)
	end, _ := valueEnd(b, i, 0)
	return end >= 0 && skipSpace(b, end) == len(b)
}

// SplitArray validates b as one JSON text and, when it is an array, appends
// its elements (without surrounding whitespace) to dst, in one pass.
func SplitArray(b []byte, dst [][]byte) ([][]byte, Result) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		end, res := valueEnd(b, i, 0)
		if end < 0 {
			return dst, res
		}
		if skipSpace(b, end) != len(b) {
			return dst, NotJSON
		}
		return dst, NotArray
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for {
			end, res := valueEnd(b, i, 1)
			if end < 0 {
				return dst, res
			}
			dst = append(dst, b[i:end:end])
			i = skipSpace(b, end)
			if i >= len(b) {
				return dst, NotJSON
			}
			if b[i] == ']' {
				i++
				break
			}
			if b[i] != ',' {
				return dst, NotJSON
			}
			i = skipSpace(b, i+1)
		}
	}
	if skipSpace(b, i) != len(b) {
		return dst, NotJSON
	}
	return dst, OK
}

// valueEnd checks the value starting at b[i], inside depth open containers,
// and returns the index after it, or -1 and why it is not valid. It is one
// loop with an explicit stack rather than a recursion: no call per value.
func valueEnd(b []byte, i, depth int) (int, Result) {
	// Open containers, innermost last: '[' or '{'.
	var stackBuf [64]byte
	stack := stackBuf[:0]
	for {
		// A value starts at i, depth+len(stack) deep.
		if i >= len(b) {
			return -1, NotJSON
		}
		switch c := b[i]; {
		case c == '[' || c == '{':
			if depth+len(stack) >= MaxDepth {
				return -1, TooDeep
			}
			stack = append(stack, c)
			i = skipSpace(b, i+1)
			if i < len(b) && (b[i] == ']' && c == '[' || b[i] == '}' && c == '{') {
				stack = stack[:len(stack)-1]
				i++
				break // an empty container is a whole value
			}
			if c == '{' {
				if i = objectKey(b, i); i < 0 {
					return -1, NotJSON
				}
			}
			continue // the first value inside
		case c == '"':
			if i = ScanString(b, i); i < 0 {
				return -1, NotJSON
			}
		case c == '-' || c >= '0' && c <= '9':
			end, ok := ScanNumber(b, i)
			if !ok {
				return -1, NotJSON
			}
			i = end
		case c == 't' && hasWord(b, i, "true"):
			i += 4
		case c == 'f' && hasWord(b, i, "false"):
			i += 5
		case c == 'n' && hasWord(b, i, "null"):
			i += 4
		default:
			return -1, NotJSON
		}
		// A value ended at i: close containers, or move to the next value.
		for {
			if len(stack) == 0 {
				return i, OK
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return -1, NotJSON
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				if top == '{' {
					if i = objectKey(b, i); i < 0 {
						return -1, NotJSON
					}
				}
				break
			}
			if b[i] == ']' && top == '[' || b[i] == '}' && top == '{' {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return -1, NotJSON
		}
	}
}

// objectKey checks `"key" :` at i and returns where the value starts, or -1.
func objectKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = ScanString(b, i); i < 0 {
		return -1
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return skipSpace(b, i+1)
}

// IsSpace reports whether c is JSON whitespace.
func IsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func skipSpace(b []byte, i int) int {
	if i < len(b) && b[i] > ' ' {
		return i // the usual case: no space at all
	}
	for i < len(b) && IsSpace(b[i]) {
		i++
	}
	return i
}

func hasWord(b []byte, i int, word string) bool {
	return len(b)-i >= len(word) && string(b[i:i+len(word)]) == word
}

// stringBodyByte marks bytes that need no attention inside a string when
// validating: printable ASCII but " and \ (non-ASCII is checked as UTF-8).
var stringBodyByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// ScanString checks the string whose opening quote is at in[i] (escapes,
// no raw control characters, valid UTF-8) and returns the index after its
// closing quote, or -1.
func ScanString(in []byte, i int) int {
	i++ // the opening quote
	for i < len(in) {
		// Skip ordinary bytes eight at a time: strings are most of a row.
		if i+8 <= len(in) {
			m := StringSpecialMask(binary.LittleEndian.Uint64(in[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		} else if stringBodyByte[in[i]] {
			i++
			continue
		}
		switch in[i] {
		case '"':
			return i + 1
		case '\\':
			if i+1 >= len(in) {
				return -1
			}
			switch in[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := Hex4(in, i+2); !ok {
					return -1
				}
				i += 6
			default:
				return -1
			}
		default:
			if in[i] < 0x80 { // a control character
				return -1
			}
			r, size := utf8.DecodeRune(in[i:])
			if r == utf8.RuneError && size == 1 {
				return -1 // not UTF-8
			}
			i += size
		}
	}
	return -1
}

// ScanNumber returns the end of the JSON number
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? starting at in[i], and
// whether there is one.
func ScanNumber(in []byte, i int) (int, bool) {
	if i < len(in) && in[i] == '-' {
		i++
	}
	if i >= len(in) {
		return i, false
	}
	switch {
	case in[i] == '0':
		i++
	case in[i] >= '1' && in[i] <= '9':
		i = SkipDigits(in, i+1)
	default:
		return i, false
	}
	if i < len(in) && in[i] == '.' {
		i++
		digits := i
		if i = SkipDigits(in, i); i == digits {
			return i, false
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		digits := i
		if i = SkipDigits(in, i); i == digits {
			return i, false
		}
	}
	return i, true
}

// SkipDigits returns the index of the first byte at or after i that is not
// an ASCII digit (len(in) if there is none), eight bytes at a time while
// eight remain: rows carry long numbers (timestamps, ids).
func SkipDigits(in []byte, i int) int {
	for i+8 <= len(in) {
		if m := NonDigitMask(binary.LittleEndian.Uint64(in[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(in) && in[i] >= '0' && in[i] <= '9' {
		i++
	}
	return i
}

// Hex4 decodes the four hex digits at in[i:i+4] (a \u escape's).
func Hex4(in []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(in) {
		return 0, false
	}
	var r rune
	for _, c := range in[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// StringSpecialMask flags, in the high bit of each byte of x (eight bytes
// read little-endian), the bytes that end a run of ordinary string content:
// '"', '\\', controls below 0x20 and non-ASCII bytes. Borrows can flag
// bytes above a true match, but the lowest flagged byte is always exact,
// which is all a scan uses.
func StringSpecialMask(x uint64) uint64 {
	ctl := (x - swarOnes*0x20) &^ x
	q := x ^ (swarOnes * '"')
	q = (q - swarOnes) &^ q
	bs := x ^ (swarOnes * '\\')
	bs = (bs - swarOnes) &^ bs
	return (ctl | q | bs | x) & swarHigh
}

// NonDigitMask flags, in the high bit of each byte of x, the bytes that are
// not ASCII digits: below '0' (the subtraction borrows), above '9' (adding
// 0x80-':' reaches the high bit) or non-ASCII. As in StringSpecialMask, the
// lowest flagged byte is exact.
func NonDigitMask(x uint64) uint64 {
	return ((x - swarOnes*'0') | (x + swarOnes*(0x80-':')) | x) & swarHigh
}
