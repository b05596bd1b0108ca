package replication

import (
	"encoding/json"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
)

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

// value copies the value at e.pos, which depth containers enclose.
func (e *pyEncoder) value(depth int) error {
	if e.pos >= len(e.in) {
		return e.fail("unexpected end of input, expected a value")
	}
	switch c := e.in[e.pos]; {
	case (c == '{' || c == '[') && depth >= jsonscan.MaxDepth:
		return jsonscan.ErrTooDeep
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
	end, ok := jsonscan.ScanNumber(e.in, e.pos)
	if !ok {
		return e.fail("invalid number")
	}
	e.out = append(e.out, e.in[e.pos:end]...)
	e.pos = end
	return nil
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
		u, ok := jsonscan.Hex4(e.in, e.pos+2)
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
	lo, ok := jsonscan.Hex4(e.in, i+2)
	if !ok || lo < 0xdc00 || lo > 0xdfff {
		return 0, false
	}
	return lo, true
}
