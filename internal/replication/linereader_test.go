package replication

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestLineReaderMatchesBufio checks that the growing line reader returns
// what a bufio.Reader of its maximum size returns, line by line, including
// ErrBufferFull for a line that fills the maximum and the final partial
// line with EOF, however the input is split into reads.
func TestLineReaderMatchesBufio(t *testing.T) {
	const max = 1000
	inputs := []string{
		"",
		"\n",
		"PING 1\nPING 2\r\n\nNAME x\n",
		"no newline at the end",
		strings.Repeat("a", max-1) + "\nnext\n",
		strings.Repeat("b", max) + "\nnext\n",
		strings.Repeat("c", max+1) + "\n",
		strings.Repeat("d", 3*max) + "\n",
		strings.Repeat("short line\n", 500) + strings.Repeat("e", 700) + "\n" + strings.Repeat("f", 999),
	}
	wraps := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for i, in := range inputs {
		for wname, wrap := range wraps {
			want := bufio.NewReaderSize(wrap(strings.NewReader(in)), max)
			got := newLineReader(wrap(strings.NewReader(in)), max)
			for n := 0; ; n++ {
				wl, werr := want.ReadSlice('\n')
				gl, gerr := got.ReadSlice()
				if !bytes.Equal(wl, gl) || !errors.Is(gerr, werr) {
					t.Fatalf("input %d, %s, line %d: got %q, %v; want %q, %v", i, wname, n, gl, gerr, wl, werr)
				}
				if werr != nil && !errors.Is(werr, bufio.ErrBufferFull) {
					break
				}
				if got.Buffered() != want.Buffered() && wname == "whole" && len(in) < max {
					t.Fatalf("input %d, line %d: buffered %d, want %d", i, n, got.Buffered(), want.Buffered())
				}
			}
		}
	}
}

func TestLineReaderGrowsOnlyWhenNeeded(t *testing.T) {
	r := newLineReader(strings.NewReader("PING 1\nNAME worker\n"), 66000)
	for range 2 {
		if _, err := r.ReadSlice(); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.buf) != lineReaderStart {
		t.Fatalf("buffer %d bytes after short lines, want %d", len(r.buf), lineReaderStart)
	}
	long := strings.Repeat("x", 16384) + "\n"
	r = newLineReader(strings.NewReader(long), 66000)
	line, err := r.ReadSlice()
	if err != nil || string(line) != long {
		t.Fatalf("long line: %d bytes, %v", len(line), err)
	}
}
