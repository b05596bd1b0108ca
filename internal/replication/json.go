package replication

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting the JSON code accepts, so that a hostile
// line of "[[[[..." cannot exhaust the stack. A line is at most a few tens of
// kilobytes, and rows of the protocol nest a handful of levels.
const maxJSONDepth = 1000

// errJSONTooDeep is returned for JSON nested deeper than maxJSONDepth.
var errJSONTooDeep = errors.New("JSON nested too deeply")

// JSONSyntaxError says where a JSON value is malformed.
type JSONSyntaxError struct {
	Offset int    // byte offset in the input
	Msg    string // what was expected or found
}

func (e *JSONSyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// AppendPythonJSON appends raw, which may be any valid JSON, re-encoded
// exactly as Python's json.dumps encodes the same value by default: ", "
// between items and ": " after keys, every character outside printable ASCII
// escaped as \uXXXX in lower-case hex (a surrogate pair above U+FFFF, the
// short forms \n \r \t \b \f for those controls), no HTML escaping, object
// keys in their given order and numbers exactly as given. This is what makes
// our lines compare byte for byte with Synapse's.
//
// Invalid JSON (including invalid UTF-8 inside strings, or trailing data)
// gives a *JSONSyntaxError and dst unchanged.
func AppendPythonJSON(dst []byte, raw json.RawMessage) ([]byte, error) {
	e := pyEncoder{in: raw, out: dst}
	start := len(dst)
	e.skipSpace()
	if err := e.value(0); err != nil {
		return dst[:start], err
	}
	e.skipSpace()
	if e.pos != len(e.in) {
		return dst[:start], &JSONSyntaxError{Offset: e.pos, Msg: "unexpected data after the JSON value"}
	}
	return e.out, nil
}

// pyEncoder re-encodes one JSON text in a single pass: it validates as it
// copies, so callers pay for one scan.
type pyEncoder struct {
	in  []byte
	pos int
	out []byte
}

func (e *pyEncoder) fail(msg string) error {
	return &JSONSyntaxError{Offset: e.pos, Msg: msg}
}

func (e *pyEncoder) skipSpace() {
	for e.pos < len(e.in) {
		switch e.in[e.pos] {
		case ' ', '\t', '\n', '\r':
			e.pos++
		default:
			return
		}
	}
}

func (e *pyEncoder) value(depth int) error {
	if depth > maxJSONDepth {
		return errJSONTooDeep
	}
	if e.pos >= len(e.in) {
		return e.fail("unexpected end of input, expected a value")
	}
	switch c := e.in[e.pos]; {
	case c == '{':
		return e.object(depth)
	case c == '[':
		return e.array(depth)
	case c == '"':
		return e.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return e.number()
	case c == 't':
		return e.literal("true")
	case c == 'f':
		return e.literal("false")
	case c == 'n':
		return e.literal("null")
	default:
		return e.fail(fmt.Sprintf("unexpected character %q, expected a value", c))
	}
}

func (e *pyEncoder) literal(word string) error {
	if len(e.in)-e.pos < len(word) || string(e.in[e.pos:e.pos+len(word)]) != word {
		return e.fail("invalid literal, expected " + word)
	}
	e.out = append(e.out, word...)
	e.pos += len(word)
	return nil
}

func (e *pyEncoder) number() error {
	end, ok := scanNumber(e.in, e.pos)
	if !ok {
		return e.fail("invalid number")
	}
	e.out = append(e.out, e.in[e.pos:end]...)
	e.pos = end
	return nil
}

// scanNumber returns the end of the JSON number starting at i.
func scanNumber(in []byte, i int) (int, bool) {
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
		i = skipDigits(in, i+1)
	default:
		return i, false
	}
	if i < len(in) && in[i] == '.' {
		i++
		digits := i
		if i = skipDigits(in, i); i == digits {
			return i, false
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		digits := i
		if i = skipDigits(in, i); i == digits {
			return i, false
		}
	}
	return i, true
}

// skipDigits returns the index of the first byte at or after i that is not
// an ASCII digit (len(in) if there is none), eight bytes at a time while
// eight remain: rows carry long numbers (timestamps, ids).
func skipDigits(in []byte, i int) int {
	for i+8 <= len(in) {
		if m := nonDigitMask(binary.LittleEndian.Uint64(in[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(in) && in[i] >= '0' && in[i] <= '9' {
		i++
	}
	return i
}

// nonDigitMask flags, in the high bit of each byte of x, the bytes that are
// not ASCII digits: below '0' (the subtraction borrows), above '9' (adding
// 0x80-':' reaches the high bit) or non-ASCII. As in stringSpecialMask,
// borrows and carries can only flag bytes above a true match, so the lowest
// flagged byte is exact.
func nonDigitMask(x uint64) uint64 {
	return ((x - swarOnes*'0') | (x + swarOnes*(0x80-':')) | x) & swarHigh
}

func (e *pyEncoder) array(depth int) error {
	e.pos++ // '['
	e.out = append(e.out, '[')
	e.skipSpace()
	if e.pos < len(e.in) && e.in[e.pos] == ']' {
		e.pos++
		e.out = append(e.out, ']')
		return nil
	}
	for {
		e.skipSpace()
		if err := e.value(depth + 1); err != nil {
			return err
		}
		e.skipSpace()
		if e.pos >= len(e.in) {
			return e.fail("unexpected end of input in an array")
		}
		switch e.in[e.pos] {
		case ',':
			e.pos++
			e.out = append(e.out, ',', ' ')
		case ']':
			e.pos++
			e.out = append(e.out, ']')
			return nil
		default:
			return e.fail("expected , or ] in an array")
		}
	}
}

func (e *pyEncoder) object(depth int) error {
	e.pos++ // '{'
	e.out = append(e.out, '{')
	e.skipSpace()
	if e.pos < len(e.in) && e.in[e.pos] == '}' {
		e.pos++
		e.out = append(e.out, '}')
		return nil
	}
	for {
		e.skipSpace()
		if e.pos >= len(e.in) || e.in[e.pos] != '"' {
			return e.fail("expected a string key in an object")
		}
		if err := e.str(); err != nil {
			return err
		}
		e.skipSpace()
		if e.pos >= len(e.in) || e.in[e.pos] != ':' {
			return e.fail("expected : after an object key")
		}
		e.pos++
		e.out = append(e.out, ':', ' ')
		e.skipSpace()
		if err := e.value(depth + 1); err != nil {
			return err
		}
		e.skipSpace()
		if e.pos >= len(e.in) {
			return e.fail("unexpected end of input in an object")
		}
		switch e.in[e.pos] {
		case ',':
			e.pos++
			e.out = append(e.out, ',', ' ')
		case '}':
			e.pos++
			e.out = append(e.out, '}')
			return nil
		default:
			return e.fail("expected , or } in an object")
		}
	}
}

const hexDigits = "0123456789abcdef"

// appendU16 appends \uXXXX for one UTF-16 code unit, in lower-case hex as
// Python writes it.
func appendU16(out []byte, u rune) []byte {
	return append(out, '\\', 'u', hexDigits[u>>12&0xf], hexDigits[u>>8&0xf], hexDigits[u>>4&0xf], hexDigits[u&0xf])
}

// appendPyRune appends one character the way Python's ensure_ascii encoder
// writes it inside a string.
func appendPyRune(out []byte, r rune) []byte {
	switch {
	case r == '"':
		return append(out, '\\', '"')
	case r == '\\':
		return append(out, '\\', '\\')
	case r >= 0x20 && r < 0x7f:
		return append(out, byte(r))
	case r == '\n':
		return append(out, '\\', 'n')
	case r == '\r':
		return append(out, '\\', 'r')
	case r == '\t':
		return append(out, '\\', 't')
	case r == '\b':
		return append(out, '\\', 'b')
	case r == '\f':
		return append(out, '\\', 'f')
	case r > 0xffff:
		hi, lo := utf16.EncodeRune(r)
		return appendU16(appendU16(out, hi), lo)
	default:
		// Other controls, DEL, everything else outside ASCII, and lone
		// surrogates (which Python keeps as they came).
		return appendU16(out, r)
	}
}

// plainStringByte marks bytes that are copied unchanged inside a string in
// Python's ensure_ascii output: printable ASCII except " and \.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (e *pyEncoder) str() error {
	e.pos++ // opening quote
	e.out = append(e.out, '"')
	for {
		// Copy the longest plain run in one append.
		start := e.pos
		for e.pos < len(e.in) && plainStringByte[e.in[e.pos]] {
			e.pos++
		}
		e.out = append(e.out, e.in[start:e.pos]...)
		if e.pos >= len(e.in) {
			return e.fail("unterminated string")
		}
		c := e.in[e.pos]
		switch {
		case c == '"':
			e.pos++
			e.out = append(e.out, '"')
			return nil
		case c == '\\':
			if err := e.escape(); err != nil {
				return err
			}
		case c < 0x20:
			return e.fail("control character in a string")
		case c == 0x7f:
			e.out = appendU16(e.out, 0x7f)
			e.pos++
		default:
			r, size := utf8.DecodeRune(e.in[e.pos:])
			if r == utf8.RuneError && size == 1 {
				return e.fail("invalid UTF-8 in a string")
			}
			e.out = appendPyRune(e.out, r)
			e.pos += size
		}
	}
}

func (e *pyEncoder) escape() error {
	if e.pos+1 >= len(e.in) {
		return e.fail("unterminated escape in a string")
	}
	c := e.in[e.pos+1]
	var r rune
	switch c {
	case '"', '\\', '/':
		r = rune(c)
	case 'b':
		r = '\b'
	case 'f':
		r = '\f'
	case 'n':
		r = '\n'
	case 'r':
		r = '\r'
	case 't':
		r = '\t'
	case 'u':
		u, ok := hex4(e.in, e.pos+2)
		if !ok {
			return e.fail(`invalid \u escape in a string`)
		}
		e.pos += 6
		if utf16.IsSurrogate(u) && u < 0xdc00 {
			// A high surrogate followed by a low one is one character;
			// Python writes the same pair back.
			if lo, ok := e.lowSurrogateAt(e.pos); ok {
				e.out = appendU16(appendU16(e.out, u), lo)
				e.pos += 6
				return nil
			}
		}
		e.out = appendPyRune(e.out, u)
		return nil
	default:
		return e.fail(fmt.Sprintf("invalid escape \\%c in a string", c))
	}
	e.pos += 2
	e.out = appendPyRune(e.out, r)
	return nil
}

func (e *pyEncoder) lowSurrogateAt(i int) (rune, bool) {
	if i+1 >= len(e.in) || e.in[i] != '\\' || e.in[i+1] != 'u' {
		return 0, false
	}
	lo, ok := hex4(e.in, i+2)
	if !ok || lo < 0xdc00 || lo > 0xdfff {
		return 0, false
	}
	return lo, true
}

func hex4(in []byte, i int) (rune, bool) {
	if i+4 > len(in) {
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

// validJSON reports whether b is one valid JSON value (surrounding
// whitespace allowed). It is the receive-side check of every RDATA row, so
// it allocates nothing (for nesting up to 64 levels), makes no function call
// per value, and checks the UTF-8 of strings as it goes (outside strings
// only ASCII is valid JSON), so that the read loop need not scan the row
// twice.
func validJSON(b []byte) bool {
	// Open containers, innermost last: '[' or '{'.
	var stackBuf [64]byte
	stack := stackBuf[:0]
	i := skipJSONSpace(b, 0)
	for {
		// A value starts at i, nested len(stack) deep.
		if i >= len(b) || len(stack) > maxJSONDepth {
			return false
		}
		switch c := b[i]; {
		case c == '[' || c == '{':
			stack = append(stack, c)
			i = skipJSONSpace(b, i+1)
			if i < len(b) && (b[i] == ']' && c == '[' || b[i] == '}' && c == '{') {
				stack = stack[:len(stack)-1]
				i++
				break // an empty container is a whole value
			}
			if c == '{' {
				if i = objectKey(b, i); i < 0 {
					return false
				}
			}
			continue // the first value inside
		case c == '"':
			if i = scanJSONString(b, i); i < 0 {
				return false
			}
		case c == '-' || c >= '0' && c <= '9':
			end, ok := scanNumber(b, i)
			if !ok {
				return false
			}
			i = end
		case c == 't' && hasWord(b, i, "true"):
			i += 4
		case c == 'f' && hasWord(b, i, "false"):
			i += 5
		case c == 'n' && hasWord(b, i, "null"):
			i += 4
		default:
			return false
		}
		// A value ended at i: close containers, or move to the next value.
		for {
			i = skipJSONSpace(b, i)
			if len(stack) == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = skipJSONSpace(b, i+1)
				if top == '{' {
					if i = objectKey(b, i); i < 0 {
						return false
					}
				}
				break
			}
			if b[i] == ']' && top == '[' || b[i] == '}' && top == '{' {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return false
		}
	}
}

// objectKey checks `"key" :` at i and returns where the value starts, or -1.
func objectKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = scanJSONString(b, i); i < 0 {
		return -1
	}
	i = skipJSONSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return skipJSONSpace(b, i+1)
}

func skipJSONSpace(b []byte, i int) int {
	if i < len(b) && b[i] > ' ' {
		return i // the usual case: no space, or the one after ", " skipped
	}
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
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

// scanJSONString checks the string whose opening quote is at i and returns
// the index after its closing quote, or -1.
func scanJSONString(in []byte, i int) int {
	i++ // the opening quote
	for i < len(in) {
		// Skip ordinary bytes eight at a time: strings are most of a row.
		if i+8 <= len(in) {
			m := stringSpecialMask(binary.LittleEndian.Uint64(in[i:]))
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
				if _, ok := hex4(in, i+2); !ok {
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

const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// stringSpecialMask flags, in the high bit of each byte of x, the bytes that
// end a run of ordinary string content: '"', '\\', controls below 0x20
// and non-ASCII bytes (checked as UTF-8 one character at a time).
// Borrows can flag bytes above a true match, but the lowest flagged byte is
// always exact, which is all the scan uses.
func stringSpecialMask(x uint64) uint64 {
	ctl := (x - swarOnes*0x20) &^ x
	q := x ^ (swarOnes * '"')
	q = (q - swarOnes) &^ q
	bs := x ^ (swarOnes * '\\')
	bs = (bs - swarOnes) &^ bs
	return (ctl | q | bs | x) & swarHigh
}
