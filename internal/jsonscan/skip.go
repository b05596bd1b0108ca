package jsonscan

import "bytes"

// SkipValue returns the index after the JSON value starting at b[i]. b must
// be valid JSON from i on (checked by Valid or SplitArray, or written by the
// Python-form encoder): only strings and brackets are looked at. On other
// input it returns some index in [i, len(b)] and never panics.
func SkipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '[', '{':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '[', '{':
				depth++
			case ']', '}':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		// A number or a literal: it ends at the first delimiter.
		for i < len(b) && !IsSpace(b[i]) && b[i] != ',' && b[i] != ']' && b[i] != '}' && b[i] != ':' {
			i++
		}
		return i
	}
}

// skipString returns the index after the string whose opening quote is at
// b[i]: the next '"' not escaped. Rows are mostly strings, so this is most
// of a skip, and bytes.IndexByte is the fastest search Go has.
func skipString(b []byte, i int) int {
	i++
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		e := bytes.IndexByte(b[i:i+q], '\\')
		if e < 0 {
			return i + q + 1
		}
		i += e + 2 // the backslash and the character it escapes
		if i > len(b) {
			return len(b)
		}
	}
}

// AppendElements appends the elements of the JSON array b to dst. b must be
// valid JSON (as for SkipValue); ok is false when it is not an array.
func AppendElements(b []byte, dst [][]byte) (elems [][]byte, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return dst, false
	}
	_, dst = ArrayAt(b, i, dst)
	return dst, true
}

// ArrayAt appends the elements of the array whose '[' is at b[i] to dst and
// returns the index after its ']'. b must be valid JSON there, as for
// SkipValue; on other input it stops within b.
func ArrayAt(b []byte, i int, dst [][]byte) (int, [][]byte) {
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, dst
	}
	for i < len(b) {
		end := SkipValue(b, i)
		if end == i {
			return i, dst // not valid JSON: stop rather than loop
		}
		dst = append(dst, b[i:end:end])
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ',' {
			break
		}
		i = skipSpace(b, i+1)
	}
	if i < len(b) && b[i] == ']' {
		i++
	}
	return i, dst
}
