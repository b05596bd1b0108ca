package rows

import (
	"strconv"
	"strings"
)

// The helpers below walk JSON that json.Valid has already accepted, so they
// only need to find value boundaries, not to diagnose syntax. They never
// index past the input even so: the fuzz target feeds them raw bytes too.

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// splitArray appends the elements of the JSON array b to dst. ok is false
// when b is not an array.
func splitArray(b []byte, dst [][]byte) (vals [][]byte, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return dst, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return dst, true
	}
	for i < len(b) {
		end := skipValue(b, i)
		dst = append(dst, b[i:end])
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ',' {
			break
		}
		i = skipSpace(b, i+1)
	}
	return dst, true
}

// skipValue returns the end of the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
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
		for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != ']' && b[i] != '}' {
			i++
		}
		return i
	}
}

// skipString returns the index after the string starting at b[i] (a quote).
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// typeOf classifies one JSON value.
func typeOf(v []byte) Type {
	if len(v) == 0 {
		return 0
	}
	switch v[0] {
	case '"':
		return String
	case '[':
		return List
	case '{':
		return Object
	case 't', 'f':
		return Bool
	case 'n':
		return Null
	}
	// Up to 18 digits always fits an int64; longer ones go to ParseInt.
	digits := v
	if digits[0] == '-' {
		digits = digits[1:]
	}
	plain := len(digits) > 0 && len(digits) <= 18
	for _, c := range digits {
		if c < '0' || c > '9' {
			plain = false
			break
		}
	}
	if plain {
		return Int
	}
	// 19 digits (nanosecond timestamps, say) fit when not above the
	// int64 bound: same-length digit strings compare as numbers.
	if len(digits) == 19 && allDigits(digits) {
		limit := "9223372036854775807"
		if v[0] == '-' {
			limit = "9223372036854775808"
		}
		if string(digits) <= limit {
			return Int
		}
		return number
	}
	if _, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return Int
	}
	return number
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// describe says in words what a set of types accepts.
func describe(t Type) string {
	names := []struct {
		t    Type
		name string
	}{
		{String, "a string"}, {Int, "an integer"}, {Bool, "a boolean"},
		{List, "a list"}, {Object, "an object"}, {Null, "null"},
	}
	if t == Any {
		return "any JSON value"
	}
	var parts []string
	for _, n := range names {
		if t&n.t != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, " or ")
}

// preview shortens a value for an error message.
func preview(b []byte) string {
	const limit = 40
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}
