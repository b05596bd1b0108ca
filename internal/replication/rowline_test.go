package replication

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckRDATARow(t *testing.T) {
	// "RDATA caches " + 19 token digits + " " is 33 bytes: room for a
	// 10-byte row in a 43-byte line.
	tests := map[string]struct {
		stream  string
		row     string
		maxLine int
		is      error
		errHas  string
	}{
		"fits exactly":       {"caches", `["123456"]`, 43, nil, ""},
		"one byte over":      {"caches", `["1234567"]`, 43, ErrRowTooLong, "RDATA line could be 44 bytes, over the line limit of 43 bytes"},
		"longer stream":      {"events", `["12345"]`, 43, nil, ""},
		"stream name counts": {"caches2", `["123456"]`, 43, ErrRowTooLong, "could be 44 bytes"},
		"default limit":      {"caches", `["` + strings.Repeat("a", DefaultMaxLineLength) + `"]`, 0, ErrRowTooLong, "limit of 16384 bytes"},
		"default fits":       {"caches", `["ok"]`, 0, nil, ""},
		"empty":              {"caches", ``, 43, errRowEmpty, "empty"},
		"newline":            {"caches", "[1,\n2]", 43, errRowNewline, "newline"},
		"carriage return":    {"caches", "[1,\r2]", 43, errRowNewline, "newline"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckRDATARow(tc.stream, []byte(tc.row), tc.maxLine)
			if tc.is == nil {
				if err != nil {
					t.Fatalf("CheckRDATARow: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("CheckRDATARow: %v, want %v containing %q", err, tc.is, tc.errHas)
			}
		})
	}
}

// TestEveryCheckedRowFitsItsLine: a row CheckRDATARow accepts makes a line
// within the limit whatever its token, batched or not.
func TestEveryCheckedRowFitsItsLine(t *testing.T) {
	const maxLine = 60
	for n := 1; n < maxLine; n++ {
		row := []byte(`[` + strings.Repeat("1", n) + `]`)
		if CheckRDATARow("caches", row, maxLine) != nil {
			continue
		}
		for _, token := range []int64{1, 1 << 62, 9223372036854775807} {
			for _, batch := range []bool{false, true} {
				line := appendRdataPrefix(nil, "caches", token, batch)
				if l := len(line) + len(row); l > maxLine {
					t.Fatalf("row of %d bytes accepted, but token %d (batch %v) makes a %d-byte line", len(row), token, batch, l)
				}
			}
		}
	}
}
