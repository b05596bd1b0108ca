package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Batch is the rows of one token of one stream: what one write on the master
// produced. Sinks take a batch whole or not at all.
type Batch struct {
	Stream string
	Token  int64
	Rows   []json.RawMessage
}

// Sink receives the worker's batches in order. Deliver returns only once the
// batch is durable as far as the sink can tell; the worker records the
// batch's token as its position only after that.
type Sink interface {
	// Deliver hands over one batch. On error nothing of the batch counts as
	// delivered, and the worker will deliver it again.
	Deliver(ctx context.Context, b Batch) error
	// Close flushes and releases the sink.
	Close() error
	// String names the sink for logs, e.g. "file:/data/rows.jsonl".
	String() string
}

// Position is a stream and token.
type Position struct {
	Stream string
	Token  int64
}

// Named sink errors, so logs, /readyz and tests can tell what went wrong.
var (
	// ErrSinkUnavailable: the sink could not be reached or failed (network
	// error, HTTP 5xx or 429). The worker keeps retrying the same batch.
	ErrSinkUnavailable = errors.New("sink unavailable")
	// ErrSinkRejected: the sink answered that it will not take the batch
	// (HTTP 4xx). The worker keeps retrying rather than skip rows; the
	// endpoint has to be fixed.
	ErrSinkRejected = errors.New("sink rejected batch")
	// ErrSinkFile: the sink file cannot be used (not a tcprepl sink file,
	// or a write failed).
	ErrSinkFile = errors.New("sink file error")
	// ErrBadSinkSpec: --sink is not one of stdout, file:PATH, http:URL.
	ErrBadSinkSpec = errors.New("bad sink")
)

// Line is one row as the stdout and file sinks write it: one JSON object per
// line. Index and Count place the row within its batch (Count rows share the
// token), which is how the file sink finds the last complete batch after a
// crash.
type Line struct {
	Stream string          `json:"stream"`
	Token  int64           `json:"token"`
	Index  int             `json:"index"`
	Count  int             `json:"count"`
	Row    json.RawMessage `json:"row"`
}

// encodeBatch appends the batch's lines to buf.
func encodeBatch(buf *bytes.Buffer, b Batch) error {
	enc := json.NewEncoder(buf)
	// Rows go out as the master sent them; HTML escaping would rewrite
	// "<" in a user's message body to \u003c.
	enc.SetEscapeHTML(false)
	for i, row := range b.Rows {
		if err := enc.Encode(Line{Stream: b.Stream, Token: b.Token, Index: i, Count: len(b.Rows), Row: row}); err != nil {
			return fmt.Errorf("encode row %d of %s token %d: %w", i, b.Stream, b.Token, err)
		}
	}
	return nil
}

// WriterSink writes JSON lines to a stream (stdout). Delivery is at least
// once: after a crash the last batches may be written again.
type WriterSink struct {
	name string
	w    io.Writer
	buf  bytes.Buffer
}

// NewWriterSink writes to w; name is used in logs.
func NewWriterSink(name string, w io.Writer) *WriterSink {
	return &WriterSink{name: name, w: w}
}

// Deliver writes the batch's lines in one write, so a reader sees each
// batch as soon as it is delivered. A failed write is retried by the next
// Deliver (no error is kept: a full disk that gets room again takes the
// batch); what a failing device took of a batch before the error may stay
// in the output as a partial line before the batch written again.
func (s *WriterSink) Deliver(_ context.Context, b Batch) error {
	s.buf.Reset()
	if err := encodeBatch(&s.buf, b); err != nil {
		return err
	}
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("%w: write to %s: %w", ErrSinkUnavailable, s.name, err)
	}
	return nil
}

// Close does nothing: every batch was written whole by Deliver.
func (s *WriterSink) Close() error { return nil }

func (s *WriterSink) String() string { return s.name }

// SinkOptions are what the worker passes to the sink it builds.
type SinkOptions struct {
	// Stdout is where the stdout sink writes; os.Stdout when nil.
	Stdout io.Writer
	// HTTP configures the HTTP sink's client and retries.
	HTTP HTTPSinkConfig
}

// ParseSinkSpec splits a --sink value into its kind and argument.
func ParseSinkSpec(spec string) (kind, arg string, err error) {
	switch {
	case spec == "stdout":
		return "stdout", "", nil
	case strings.HasPrefix(spec, "file:") && len(spec) > len("file:"):
		return "file", strings.TrimPrefix(spec, "file:"), nil
	case strings.HasPrefix(spec, "http:") && len(spec) > len("http:"):
		url := strings.TrimPrefix(spec, "http:")
		// "http:http://host/path" and "http://host/path" both mean the URL.
		if strings.HasPrefix(spec, "http://") || strings.HasPrefix(spec, "https://") {
			url = spec
		}
		if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
			return "", "", fmt.Errorf("%w %q: the HTTP sink needs a URL, e.g. http:https://example.org/hook", ErrBadSinkSpec, spec)
		}
		return "http", url, nil
	default:
		return "", "", fmt.Errorf("%w %q: use stdout, file:PATH or http:URL", ErrBadSinkSpec, spec)
	}
}
