package jsonscan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// stdValid is the oracle: encoding/json's grammar, plus UTF-8 (encoding/json
// lets invalid UTF-8 through, the wire does not) and the depth limit.
func stdValid(b []byte) bool {
	return json.Valid(b) && utf8.Valid(b) && depthOf(b) <= MaxDepth
}

// depthOf is the deepest nesting of containers in valid JSON b.
func depthOf(b []byte) int {
	d := json.NewDecoder(bytes.NewReader(b))
	depth, deepest := 0, 0
	for {
		tok, err := d.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}

func TestValid(t *testing.T) {
	tests := map[string]struct {
		in   string
		want bool
	}{
		"empty array":          {`[]`, true},
		"empty object":         {`{}`, true},
		"spaces around":        {" \t\r\n[1, 2]\n ", true},
		"nested":               {`{"a": [1, {"b": null}], "c": "d"}`, true},
		"escapes":              {`"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"`, true},
		"utf-8 in a string":    {`"café 😀"`, true},
		"numbers":              {`[0, -0, 1.5, -2e-3, 1E+9, 12345678901234567890]`, true},
		"literals":             {`[true, false, null]`, true},
		"long string":          {`"` + strings.Repeat("abcdefgh", 20) + `"`, true},
		"at the depth limit":   {strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), true},
		"over the depth limit": {strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), false},
		"nothing":              {``, false},
		"only space":           {` `, false},
		"unclosed":             {`[1`, false},
		"trailing comma":       {`[1,]`, false},
		"object without value": {`{"a"}`, false},
		"bare key":             {`{a: 1}`, false},
		"two values":           {`[1] [2]`, false},
		"unterminated string":  {`"abc`, false},
		"bad escape":           {`"\x"`, false},
		"short \\u":            {`"\u12"`, false},
		"raw control":          {"\"a\x01b\"", false},
		"invalid utf-8":        {"\"\xff\"", false},
		"truncated utf-8":      {"\"\xc3\"", false},
		"leading zero":         {`01`, false},
		"bare dot":             {`1.`, false},
		"no integer part":      {`.5`, false},
		"empty exponent":       {`1e`, false},
		"plus sign":            {`+1`, false},
		"NaN":                  {`NaN`, false},
		"short literal":        {`tru`, false},
		"mismatched brackets":  {`[1}`, false},
		"single quotes":        {`'a'`, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Valid([]byte(tc.in)); got != tc.want {
				t.Fatalf("Valid(%q) = %v, want %v", tc.in, got, tc.want)
			}
			if want := stdValid([]byte(tc.in)); want != tc.want {
				t.Fatalf("the oracle says %v for %q: the table is wrong", want, tc.in)
			}
		})
	}
}

func TestSplitArray(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string
		res  Result
	}{
		"empty":               {`[]`, nil, OK},
		"spaced":              {` [ 1 , "a" ,[2, 3],{"k": "]"} ] `, []string{`1`, `"a"`, `[2, 3]`, `{"k": "]"}`}, OK},
		"strings with tricks": {`["a]\"},[", "x, y"]`, []string{`"a]\"},["`, `"x, y"`}, OK},
		"not an array":        {`{"a": 1}`, nil, NotArray},
		"a scalar":            {` 5 `, nil, NotArray},
		"invalid":             {`[1, 2`, nil, NotJSON},
		"trailing data":       {`[1] x`, nil, NotJSON},
		"invalid scalar":      {`5 x`, nil, NotJSON},
		"too deep inside":     {`[` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `]`, nil, TooDeep},
		"too deep a scalar":   {strings.Repeat("{\"a\":", MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1), nil, TooDeep},
		"at the limit":        {`[` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `]`, []string{strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1)}, OK},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, res := SplitArray([]byte(tc.in), nil)
			if res != tc.res {
				t.Fatalf("SplitArray(%q) result %d, want %d", tc.in, res, tc.res)
			}
			if res != OK {
				return
			}
			if strings.Join(asStrings(got), "|") != strings.Join(tc.want, "|") {
				t.Fatalf("SplitArray(%q) = %q, want %q", tc.in, got, tc.want)
			}
			// The trusted split agrees on valid input.
			trusted, ok := AppendElements([]byte(tc.in), nil)
			if !ok || strings.Join(asStrings(trusted), "|") != strings.Join(tc.want, "|") {
				t.Fatalf("AppendElements(%q) = %q %v, want %q", tc.in, trusted, ok, tc.want)
			}
		})
	}
}

func TestSkipValue(t *testing.T) {
	tests := map[string]struct {
		in   string
		from int
		want int
	}{
		"string":                {`"a\"b", 1`, 0, 6},
		"escaped backslash":     {`"a\\", 1`, 0, 5},
		"array with strings":    {`["]", "[", {"}": 1}], 2`, 0, 20},
		"number in an array":    {`[12, 3]`, 1, 3},
		"number before a colon": {`1:`, 0, 1},
		"literal at the end":    {`true`, 0, 4},
		"past the end":          {`[]`, 5, 2},
		"unterminated string":   {`"abc\`, 0, 5},
		"unclosed container":    {`[[1]`, 0, 4},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := SkipValue([]byte(tc.in), tc.from); got != tc.want {
				t.Fatalf("SkipValue(%q, %d) = %d, want %d", tc.in, tc.from, got, tc.want)
			}
		})
	}
}

func asStrings(vals [][]byte) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	return out
}

// FuzzScan checks every operation against encoding/json: Valid agrees with
// it, SplitArray finds the elements encoding/json decodes (none dropped,
// none reordered, each byte for byte the same value), and on valid input the
// trusted split and SkipValue agree with the validating one.
func FuzzScan(f *testing.F) {
	for _, s := range []string{`[]`, `[1, "a", {"b": [null]}]`, `{"a": 1}`, `"x"`, `[1,`, `["\u00e9\ud83d"]`, "[\"\xff\"]", ` [ 1e5 , -0.5 ] `, `[[[[]]]]`, `["a\\", "b"]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		valid := Valid(in)
		if want := stdValid(in); valid != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", in, valid, want)
		}
		elems, res := SplitArray(in, nil)
		if !valid {
			if res == OK || res == NotArray {
				t.Fatalf("SplitArray(%q) = %d for invalid JSON", in, res)
			}
			// Never panics on bytes it was not meant for.
			_, _ = AppendElements(in, nil)
			for i := range in {
				if end := SkipValue(in, i); end < i || end > len(in) {
					t.Fatalf("SkipValue(%q, %d) = %d, outside the input", in, i, end)
				}
			}
			return
		}
		var decoded []json.RawMessage
		// Unmarshal also takes null as a nil slice; an array starts with [.
		trimmed := bytes.TrimLeft(in, " \t\r\n")
		isArray := len(trimmed) > 0 && trimmed[0] == '[' && json.Unmarshal(in, &decoded) == nil
		if isArray != (res == OK) {
			t.Fatalf("SplitArray(%q) = %d, but encoding/json decodes an array: %v", in, res, isArray)
		}
		if !isArray {
			return
		}
		if len(elems) != len(decoded) {
			t.Fatalf("SplitArray(%q) found %d elements, encoding/json %d", in, len(elems), len(decoded))
		}
		for i := range elems {
			if !sameJSON(t, elems[i], decoded[i]) {
				t.Fatalf("element %d of %q: %q, encoding/json %q", i, in, elems[i], decoded[i])
			}
			if end := SkipValue(elems[i], 0); end != len(elems[i]) {
				t.Fatalf("SkipValue(%q) = %d, want %d", elems[i], end, len(elems[i]))
			}
		}
		trusted, ok := AppendElements(in, nil)
		if !ok || strings.Join(asStrings(trusted), "\x00") != strings.Join(asStrings(elems), "\x00") {
			t.Fatalf("AppendElements(%q) = %q, SplitArray %q", in, trusted, elems)
		}
	})
}

// sameJSON reports whether a and b decode to the same value (numbers as
// their literals).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	return string(compact(t, a)) == string(compact(t, b))
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatalf("compact %q: %v", b, err)
	}
	return out.Bytes()
}

func BenchmarkScan(b *testing.B) {
	row := []byte(`["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513, "` + strings.Repeat("x", 20) + `"]`)
	b.Run("Valid", func(b *testing.B) {
		b.SetBytes(int64(len(row)))
		b.ReportAllocs()
		for b.Loop() {
			if !Valid(row) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("SplitArray", func(b *testing.B) {
		b.SetBytes(int64(len(row)))
		b.ReportAllocs()
		var buf [8][]byte
		for b.Loop() {
			if _, res := SplitArray(row, buf[:0]); res != OK {
				b.Fatal(res)
			}
		}
	})
	b.Run("AppendElements", func(b *testing.B) {
		b.SetBytes(int64(len(row)))
		b.ReportAllocs()
		var buf [8][]byte
		for b.Loop() {
			if _, ok := AppendElements(row, buf[:0]); !ok {
				b.Fatal("not an array")
			}
		}
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
		m := StringSpecialMask(binary.LittleEndian.Uint64(b[:]))
		got := 8
		if m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("bytes % x: first special at %d, mask says %d", b, want, got)
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
		m := NonDigitMask(binary.LittleEndian.Uint64(b[:]))
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
			if got := SkipDigits(append(b, 'x'), 0); got != want {
				t.Fatalf("SkipDigits(%q) = %d, want %d", b, got, want)
			}
		}
	}
}
