package replication

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// pythonCases pair JSON input with what Python 3's json.dumps(json.loads(x))
// prints for it (checked against CPython's json module by hand).
var pythonCases = []struct{ in, want string }{
	{`[]`, `[]`},
	{`{}`, `{}`},
	{`[1,2,3]`, `[1, 2, 3]`},
	{`{"a":1,"b":[true,false,null]}`, `{"a": 1, "b": [true, false, null]}`},
	{` { "b" : 1 , "a" : 2 } `, `{"b": 1, "a": 2}`}, // key order kept
	{`[[],{},[[]]]`, `[[], {}, [[]]]`},
	{`"caf\u00e9"`, `"caf\u00e9"`},
	{`"café"`, `"caf\u00e9"`},
	{`"😀"`, `"\ud83d\ude00"`},
	{`"\uD83D\uDE00"`, `"\ud83d\ude00"`},
	{`"\ud800"`, `"\ud800"`},             // a lone surrogate stays as it came
	{`"\ud800x"`, `"\ud800x"`},           // high surrogate not followed by a low one
	{`"\udc00\ud800"`, `"\udc00\ud800"`}, // reversed pair is two lone surrogates
	{`"<>&'"`, `"<>&'"`},                 // no HTML escaping
	{`"\/"`, `"/"`},                      // Python does not escape /
	{`"a\"b\\c"`, `"a\"b\\c"`},
	{`"\b\f\n\r\t"`, `"\b\f\n\r\t"`},
	{`"\u0001\u001f"`, `"\u0001\u001f"`},
	{`"\u0041"`, `"A"`},
	{"\"\x7f\"", `"\u007f"`}, // DEL is outside Python's printable range
	{`"\u2028\u2029"`, `"\u2028\u2029"`},
	{`"\u00E9"`, `"\u00e9"`}, // lower-case hex like Python
	{`"ÿ€"`, `"\u00ff\u20ac"`},
	{`-0`, `-0`},
	{`1.5e+10`, `1.5e+10`}, // numbers are kept as given
	{`12345678901234567890`, `12345678901234567890`},
	{"[1,\n\t2]", `[1, 2]`},
	{`"a b"`, `"a b"`},
}

func TestAppendPythonJSON(t *testing.T) {
	for _, tc := range pythonCases {
		got, err := AppendPythonJSON([]byte("pre"), json.RawMessage(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if string(got) != "pre"+tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got[3:], tc.want)
		}
		if !validJSON([]byte(tc.in)) {
			t.Errorf("validJSON(%s) = false", tc.in)
		}
	}
}

func TestAppendPythonJSONRejectsInvalid(t *testing.T) {
	deep := strings.Repeat("[", maxJSONDepth+2) + strings.Repeat("]", maxJSONDepth+2)
	for _, in := range []string{
		``, ` `, `[`, `]`, `[1,]`, `[,1]`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1,}`, `{"a" 1}`, `[1 2]`,
		`"abc`, `"\x"`, `"\u12"`, `"\u12G4"`, "\"a\x01b\"", "\"\xff\"", "\"\xc3\"", `01`, `1.`, `.5`, `1e`, `-`, `+1`,
		`tru`, `nul`, `falsey`, `NaN`, `Infinity`, `[1] [2]`, `{} x`, `'a'`, deep, "\"\\",
	} {
		out, err := AppendPythonJSON([]byte("keep"), json.RawMessage(in))
		if err == nil {
			t.Errorf("%q: accepted, gave %q", in, out)
			continue
		}
		var se *JSONSyntaxError
		if !errors.As(err, &se) && !errors.Is(err, errJSONTooDeep) {
			t.Errorf("%q: error %T %v, want *JSONSyntaxError", in, err, err)
		}
		if string(out) != "keep" {
			t.Errorf("%q: dst changed to %q on error", in, out)
		}
		if validJSON([]byte(in)) {
			t.Errorf("validJSON(%q) = true", in)
		}
	}
}

// checkPythonJSON checks the properties every re-encoding must have; the
// fuzz target and the table tests share it.
func checkPythonJSON(t *testing.T, in []byte) {
	out, err := AppendPythonJSON(nil, in)
	stdValid := json.Valid(in) && utf8.Valid(in)
	if (err == nil) != stdValid {
		// encoding/json has no depth limit; we do.
		if !errors.Is(err, errJSONTooDeep) || !stdValid {
			t.Fatalf("AppendPythonJSON(%q) error %v, but encoding/json says valid=%v", in, err, stdValid)
		}
		return
	}
	if validJSON(in) != (err == nil) {
		t.Fatalf("validJSON(%q) = %v, AppendPythonJSON error %v", in, validJSON(in), err)
	}
	if err != nil {
		return
	}
	for _, c := range out {
		if c >= 0x80 || (c < 0x20) {
			t.Fatalf("output %q of %q has byte %#x outside printable ASCII", out, in, c)
		}
	}
	// Numbers are compared as their literals (json.Number): they are copied
	// as given, and a valid literal may be out of float64's range.
	decode := func(b []byte) (any, error) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		err := d.Decode(&v)
		return v, err
	}
	a, err := decode(in)
	if err != nil {
		t.Fatalf("unmarshal input %q: %v", in, err)
	}
	b, err := decode(out)
	if err != nil {
		t.Fatalf("unmarshal output %q: %v", out, err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("value changed: %q decodes to %#v, output %q to %#v", in, a, out, b)
	}
	again, err := AppendPythonJSON(nil, out)
	if err != nil || string(again) != string(out) {
		t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, err)
	}
}

func FuzzAppendPythonJSON(f *testing.F) {
	for _, tc := range pythonCases {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte(`["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`))
	f.Add([]byte(`{"a": {"b": ["c", 1.5, -2e-3, null]}, "d": "\u00e9\ud83d\ude00"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkPythonJSON(t, in)
	})
}

// TestStringSpecialMask checks the eight-bytes-at-a-time scan against a
// byte-by-byte one: the first flagged byte must be the first special byte.
func TestStringSpecialMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	interesting := []byte{0, 0x1f, 0x20, '"', '\\', 0x7f, 0x80, 0xff, 'a', 0x21, 0x5b, 0x5d}
	for n := 0; n < 200000; n++ {
		var b [8]byte
		for i := range b {
			if rng.IntN(2) == 0 {
				b[i] = interesting[rng.IntN(len(interesting))]
			} else {
				b[i] = byte(rng.IntN(256))
			}
		}
		want := 8
		for i, c := range b {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				want = i
				break
			}
		}
		m := stringSpecialMask(binary.LittleEndian.Uint64(b[:]))
		got := 8
		if m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("bytes % x: first special at %d, mask says %d", b, want, got)
		}
	}
}

// TestDepthLimitAgrees: the validator and the re-encoder accept and refuse
// the same nesting depths.
func TestDepthLimitAgrees(t *testing.T) {
	for n := maxJSONDepth - 1; n <= maxJSONDepth+3; n++ {
		for _, inner := range []string{"", "1"} {
			in := []byte(strings.Repeat("[", n) + inner + strings.Repeat("]", n))
			_, err := AppendPythonJSON(nil, in)
			if validJSON(in) != (err == nil) {
				t.Errorf("depth %d, inner %q: validJSON %v, AppendPythonJSON error %v", n, inner, validJSON(in), err)
			}
		}
	}
}

// TestNonDigitMask checks the eight-bytes-at-a-time digit scan against a
// byte-by-byte one: the first flagged byte must be the first non-digit.
func TestNonDigitMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	interesting := []byte{'0', '5', '9', '/', ':', 0, 0x7f, 0x80, 0xb0, 0xb9, 0xba, 0xff, '.', 'e', '-', ']'}
	for n := 0; n < 200000; n++ {
		var b [8]byte
		for i := range b {
			switch rng.IntN(3) {
			case 0:
				b[i] = interesting[rng.IntN(len(interesting))]
			case 1:
				b[i] = '0' + byte(rng.IntN(10))
			default:
				b[i] = byte(rng.IntN(256))
			}
		}
		want := 8
		for i, c := range b {
			if c < '0' || c > '9' {
				want = i
				break
			}
		}
		m := nonDigitMask(binary.LittleEndian.Uint64(b[:]))
		got := 8
		if m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("bytes % x: first non-digit at %d, mask says %d", b, want, got)
		}
	}
	// Exhaustively for one non-digit after a run of digits, at every place.
	for c := range 256 {
		for at := range 8 {
			b := []byte("12345678")
			b[at] = byte(c)
			want := 8
			if c < '0' || c > '9' {
				want = at
			}
			if got := skipDigits(append(b, 'x'), 0); got != want {
				t.Fatalf("skipDigits(%q) = %d, want %d", b, got, want)
			}
		}
	}
}
