package replication

import (
	"bufio"
	"bytes"
	"io"
)

// lineReaderStart is the read buffer of a new connection. Most connections
// receive only short commands, so the buffer starts small and grows (up to
// the reader's maximum) only when a line or a burst needs it.
const lineReaderStart = 512

// lineReader reads newline-terminated lines, like bufio.Reader.ReadSlice
// on a reader of size max, with a buffer that starts at lineReaderStart and
// doubles when a line does not fit or a read fills all the free space. The
// limits are those of a bufio.Reader of size max: a line that fills max
// bytes without a newline gives bufio.ErrBufferFull.
type lineReader struct {
	rd      io.Reader
	buf     []byte
	r, w    int // read and write positions in buf
	scanned int // bytes after r already known to hold no newline
	max     int
	grow    bool // the last read filled the free space: grow before the next
	err     error
}

func newLineReader(rd io.Reader, max int) *lineReader {
	return &lineReader{rd: rd, buf: make([]byte, min(lineReaderStart, max)), max: max}
}

// Buffered returns the number of bytes that can be read from the buffer.
func (b *lineReader) Buffered() int { return b.w - b.r }

// ReadSlice returns the next line including its newline. The slice aliases
// the buffer and is valid only until the next call. As with bufio, an error
// is returned with the bytes buffered before it (a line without newline),
// and bufio.ErrBufferFull when max bytes hold no newline.
func (b *lineReader) ReadSlice() ([]byte, error) {
	for {
		if i := bytes.IndexByte(b.buf[b.r+b.scanned:b.w], '\n'); i >= 0 {
			end := b.r + b.scanned + i + 1
			line := b.buf[b.r:end]
			b.r, b.scanned = end, 0
			return line, nil
		}
		b.scanned = b.w - b.r
		if b.err != nil {
			line := b.buf[b.r:b.w]
			b.r, b.scanned = b.w, 0
			err := b.err
			b.err = nil
			return line, err
		}
		if b.w-b.r >= b.max {
			line := b.buf[b.r:b.w]
			b.r, b.scanned = b.w, 0
			return line, bufio.ErrBufferFull
		}
		b.fill()
	}
}

// fill reads once into the buffer, first moving what is buffered to its
// start and growing it when it is full or the last read filled it.
func (b *lineReader) fill() {
	if b.r > 0 {
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
	if (b.w == len(b.buf) || b.grow) && len(b.buf) < b.max {
		nb := make([]byte, min(2*len(b.buf), b.max))
		copy(nb, b.buf[:b.w])
		b.buf = nb
	}
	b.grow = false
	for range 100 {
		n, err := b.rd.Read(b.buf[b.w:])
		if n < 0 {
			panic("replication: reader returned a negative count")
		}
		b.grow = n > 0 && b.w+n == len(b.buf)
		b.w += n
		if err != nil {
			b.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	b.err = io.ErrNoProgress
}
