package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
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
		if !jsonscan.Valid([]byte(tc.in)) {
			t.Errorf("Valid(%s) = false", tc.in)
		}
	}
}

func TestAppendPythonJSONRejectsInvalid(t *testing.T) {
	deep := strings.Repeat("[", jsonscan.MaxDepth+2) + strings.Repeat("]", jsonscan.MaxDepth+2)
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
		if !errors.As(err, &se) && !errors.Is(err, jsonscan.ErrTooDeep) {
			t.Errorf("%q: error %T %v, want *JSONSyntaxError", in, err, err)
		}
		if string(out) != "keep" {
			t.Errorf("%q: dst changed to %q on error", in, out)
		}
		if jsonscan.Valid([]byte(in)) {
			t.Errorf("Valid(%q) = true", in)
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
		if !errors.Is(err, jsonscan.ErrTooDeep) || !stdValid {
			t.Fatalf("AppendPythonJSON(%q) error %v, but encoding/json says valid=%v", in, err, stdValid)
		}
		return
	}
	if jsonscan.Valid(in) != (err == nil) {
		t.Fatalf("Valid(%q) = %v, AppendPythonJSON error %v", in, jsonscan.Valid(in), err)
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

// TestDepthLimitAgrees: the validator and the re-encoder accept and refuse
// the same nesting depths.
func TestDepthLimitAgrees(t *testing.T) {
	for n := jsonscan.MaxDepth - 1; n <= jsonscan.MaxDepth+3; n++ {
		for _, inner := range []string{"", "1"} {
			in := []byte(strings.Repeat("[", n) + inner + strings.Repeat("]", n))
			_, err := AppendPythonJSON(nil, in)
			if jsonscan.Valid(in) != (err == nil) {
				t.Errorf("depth %d, inner %q: validJSON %v, AppendPythonJSON error %v", n, inner, jsonscan.Valid(in), err)
			}
		}
	}
}
