package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ErrSinkFileInUse means another worker holds the sink file's lock.
var ErrSinkFileInUse = errors.New("sink file in use by another worker")

// FileSink appends JSON lines to a file, exactly once across restarts: each
// batch is written with one write and synced before it counts as delivered,
// and on open a trailing partial batch (a crash mid-write) is cut off, so the
// file always ends with a whole batch whose token the worker resumes after.
type FileSink struct {
	path string
	f    *os.File
	size int64 // end of the last whole batch
	buf  bytes.Buffer
	last *Position
}

// OpenFileSink opens (or creates) path for appending and repairs its tail.
func OpenFileSink(path string) (*FileSink, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrSinkFile, path, err)
	}
	// Locked before repair, which may truncate: two workers appending to
	// one file (with different state dirs) overwrote each other's batches
	// silently. flock is released by the kernel when the process dies.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %w: %s is being written by another worker; give each worker its own sink file", ErrSinkFile, ErrSinkFileInUse, path)
		}
		return nil, fmt.Errorf("%w: lock %s: %w", ErrSinkFile, path, err)
	}
	s := &FileSink{path: path, f: f}
	if err := s.repair(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// linePrefix is how every line the sink writes begins. A trailing fragment is
// cut only if it starts like this, so pointing --sink at someone else's file
// can never truncate it.
var linePrefix = []byte(`{"stream":`)

// repair finds the last whole batch at the end of the file and truncates
// whatever follows it. It reads the file backwards in growing chunks, so
// opening a large file costs about one batch of reading.
func (s *FileSink) repair() error {
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("%w: stat %s: %w", ErrSinkFile, s.path, err)
	}
	size := st.Size()
	for chunk := int64(64 << 10); ; chunk *= 4 {
		start := max(size-chunk, 0)
		end, last, found, err := s.findLastBatchEnd(start, size)
		if err != nil {
			return err
		}
		if !found && start > 0 {
			continue // the last whole batch begins before this chunk
		}
		if end < size {
			if err := s.f.Truncate(end); err != nil {
				return fmt.Errorf("%w: cut partial batch from %s: %w", ErrSinkFile, s.path, err)
			}
			if err := s.f.Sync(); err != nil {
				return fmt.Errorf("%w: sync %s: %w", ErrSinkFile, s.path, err)
			}
		}
		s.size, s.last = end, last
		return nil
	}
}

// findLastBatchEnd reads [start, size) and returns the offset just past the
// last line that closes a batch (Index == Count-1). found is false when no
// such line lies in the range; end is then start (or 0 when start is 0).
func (s *FileSink) findLastBatchEnd(start, size int64) (end int64, last *Position, found bool, err error) {
	data := make([]byte, size-start)
	if _, err := s.f.ReadAt(data, start); err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, false, fmt.Errorf("%w: read %s: %w", ErrSinkFile, s.path, err)
	}
	base := start
	if start > 0 {
		// The chunk may begin mid-line; that line is looked at on the
		// next, larger pass if needed.
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return start, nil, false, nil
		}
		base += int64(nl + 1)
		data = data[nl+1:]
	}
	// A fragment after the last newline is a write cut short.
	tailStart := bytes.LastIndexByte(data, '\n') + 1
	if frag := data[tailStart:]; len(frag) > 0 && !bytes.HasPrefix(frag, linePrefix) && !bytes.HasPrefix(linePrefix, frag) {
		return 0, nil, false, fmt.Errorf("%w: %s does not end like a tcprepl sink file (last line %.40q...); pick another --sink path", ErrSinkFile, s.path, frag)
	}
	lines := data[:tailStart]
	for len(lines) > 0 {
		// lines ends with '\n'; take the last line.
		i := bytes.LastIndexByte(lines[:len(lines)-1], '\n') + 1
		lineStart := base + int64(i)
		var l Line
		if err := json.Unmarshal(lines[i:], &l); err != nil || l.Stream == "" || l.Count < 1 || l.Index < 0 || l.Index >= l.Count || len(l.Row) == 0 {
			return 0, nil, false, fmt.Errorf("%w: %s is not a tcprepl sink file (line at byte %d is not a row line); pick another --sink path", ErrSinkFile, s.path, lineStart)
		}
		if l.Index == l.Count-1 {
			return base + int64(len(lines)), &Position{Stream: l.Stream, Token: l.Token}, true, nil
		}
		lines = lines[:i]
	}
	return start, nil, false, nil
}

// Recover returns the last whole batch in the file, nil if it holds none.
func (s *FileSink) Recover() (*Position, error) {
	if s.last == nil {
		return nil, nil
	}
	p := *s.last
	return &p, nil
}

// Size is the offset just past the last whole batch.
func (s *FileSink) Size() int64 { return s.size }

// PositionsAfter reads the whole batches from offset (an earlier Size) to
// the end and returns the last token of each stream among them: what the
// file holds that positions saved at offset lack.
func (s *FileSink) PositionsAfter(offset int64) (map[string]int64, error) {
	if offset > s.size {
		return nil, fmt.Errorf("%w: the saved positions expect %s to hold at least %d bytes but it holds %d: was it truncated or replaced? Move the state dir or the file away to start over",
			ErrSinkFile, s.path, offset, s.size)
	}
	out := map[string]int64{}
	if offset == s.size {
		return out, nil
	}
	if offset > 0 {
		var prev [1]byte
		if _, err := s.f.ReadAt(prev[:], offset-1); err != nil {
			return nil, fmt.Errorf("%w: read %s: %w", ErrSinkFile, s.path, err)
		}
		if prev[0] != '\n' {
			return nil, fmt.Errorf("%w: the saved sink offset %d of %s is not at a line boundary: was the file replaced? Move the state dir or the file away to start over", ErrSinkFile, offset, s.path)
		}
	}
	sc := bufio.NewScanner(io.NewSectionReader(s.f, offset, s.size-offset))
	sc.Buffer(nil, 64<<20)
	at := offset
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Stream == "" || l.Count < 1 || l.Index < 0 || l.Index >= l.Count {
			return nil, fmt.Errorf("%w: %s: line at byte %d is not a row line; pick another --sink path", ErrSinkFile, s.path, at)
		}
		if l.Index == l.Count-1 {
			out[l.Stream] = l.Token
		}
		at += int64(len(sc.Bytes())) + 1
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrSinkFile, s.path, err)
	}
	return out, nil
}

// Deliver appends the batch with one write and syncs it. If the write fails
// part way the file is cut back, so a retry does not leave half a batch
// behind the next one.
func (s *FileSink) Deliver(_ context.Context, b Batch) error {
	s.buf.Reset()
	if err := encodeBatch(&s.buf, b); err != nil {
		return err
	}
	if _, err := s.f.WriteAt(s.buf.Bytes(), s.size); err != nil {
		return s.undo(fmt.Errorf("%w: append to %s: %w", ErrSinkFile, s.path, err))
	}
	if err := s.f.Sync(); err != nil {
		return s.undo(fmt.Errorf("%w: sync %s: %w", ErrSinkFile, s.path, err))
	}
	s.size += int64(s.buf.Len())
	s.last = &Position{Stream: b.Stream, Token: b.Token}
	return nil
}

func (s *FileSink) undo(err error) error {
	if terr := s.f.Truncate(s.size); terr != nil {
		return fmt.Errorf("%w (and cutting the partial batch failed: %w; the worker repairs the file on its next start)", err, terr)
	}
	return err
}

// Close closes the file.
func (s *FileSink) Close() error { return s.f.Close() }

func (s *FileSink) String() string { return "file:" + s.path }
