package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/backoff"
)

// HTTPSinkConfig configures the HTTP sink.
type HTTPSinkConfig struct {
	// Client sends the requests; a client with a 30 s timeout when nil.
	Client *http.Client
	// InitialBackoff and MaxBackoff bound the wait between retries of one
	// batch (defaults 100 ms and 30 s); the wait doubles, each drawn from
	// the upper half of its step (see internal/backoff).
	InitialBackoff, MaxBackoff time.Duration
	// OnError, if set, is called with each failed attempt's error (for
	// metrics); it must not block.
	OnError func(error)
	Logger  logr.Logger
}

// HTTPBody is what the HTTP sink POSTs: one whole batch per request.
type HTTPBody struct {
	Stream string            `json:"stream"`
	Token  int64             `json:"token"`
	Rows   []json.RawMessage `json:"rows"`
}

// HTTPSink POSTs each batch as JSON and retries it, with backoff, until the
// endpoint answers 2xx: a row is never skipped, and a batch is never split.
// Delivery is at least once; the Idempotency-Key header (stream/token) lets
// the endpoint drop a batch it has already taken.
type HTTPSink struct {
	url string
	cfg HTTPSinkConfig

	mu      sync.Mutex
	lastErr error // the failure being retried, nil once a batch got through
}

// NewHTTPSink posts to url.
func NewHTTPSink(url string, cfg HTTPSinkConfig) *HTTPSink {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.InitialBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.InitialBackoff)
	}
	return &HTTPSink{url: url, cfg: cfg}
}

// Deliver posts the batch, retrying until it is accepted or ctx ends.
func (s *HTTPSink) Deliver(ctx context.Context, b Batch) error {
	body, err := json.Marshal(HTTPBody(b))
	if err != nil {
		return fmt.Errorf("encode batch %s/%d: %w", b.Stream, b.Token, err)
	}
	retry := backoff.New(s.cfg.InitialBackoff, s.cfg.MaxBackoff)
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, b, body)
		if err == nil {
			s.setErr(nil)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("delivering %s/%d to %s: %w (last attempt: %w)", b.Stream, b.Token, s.url, ctx.Err(), err)
		}
		s.setErr(err)
		if s.cfg.OnError != nil {
			s.cfg.OnError(err)
		}
		// Jittered, so that many workers retrying against one endpoint
		// that just came back do not retry in step.
		sleep := retry.Next()
		s.cfg.Logger.Error(err, "HTTP sink failed; retrying the same batch", "stream", b.Stream, "token", b.Token, "attempt", attempt, "retryIn", sleep)
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("delivering %s/%d to %s: %w (last attempt: %w)", b.Stream, b.Token, s.url, ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (s *HTTPSink) post(ctx context.Context, b Batch, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSinkRejected, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", b.Stream+"/"+strconv.FormatInt(b.Token, 10))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: POST %s: %w", ErrSinkUnavailable, s.url, err)
	}
	// Read a little of the body for the error message, then drain so the
	// connection can be reused.
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("%w: POST %s: %s %q", ErrSinkUnavailable, s.url, resp.Status, bytes.TrimSpace(msg))
	default:
		return fmt.Errorf("%w: POST %s: %s %q; fix the endpoint, the worker retries and will not skip the batch", ErrSinkRejected, s.url, resp.Status, bytes.TrimSpace(msg))
	}
}

func (s *HTTPSink) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

// Err returns the failure being retried, nil when the last batch got through.
func (s *HTTPSink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Close releases idle connections.
func (s *HTTPSink) Close() error {
	s.cfg.Client.CloseIdleConnections()
	return nil
}

func (s *HTTPSink) String() string { return "http:" + s.url }
