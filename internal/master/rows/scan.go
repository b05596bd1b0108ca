package rows

import (
	"strconv"
	"strings"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
)

// trimSpace drops the JSON whitespace around b (for error messages).
func trimSpace(b []byte) []byte {
	for len(b) > 0 && jsonscan.IsSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && jsonscan.IsSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
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
