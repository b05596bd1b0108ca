package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func rows(vals ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(vals))
	for i, v := range vals {
		out[i] = json.RawMessage(v)
	}
	return out
}

func readLines(t *testing.T, path string) []Line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Line
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func TestWriterSink(t *testing.T) {
	var buf bytes.Buffer
	s := NewWriterSink("stdout", &buf)
	if err := s.Deliver(context.Background(), Batch{Stream: "caches", Token: 54, Rows: rows(`["f", ["<a>"], 1]`, `["g", [], 2]`)}); err != nil {
		t.Fatal(err)
	}
	want := `{"stream":"caches","token":54,"index":0,"count":2,"row":["f",["<a>"],1]}` + "\n" +
		`{"stream":"caches","token":54,"index":1,"count":2,"row":["g",[],2]}` + "\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
	if s.String() != "stdout" {
		t.Fatal(s.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriterSinkError(t *testing.T) {
	s := NewWriterSink("stdout", failWriter{})
	err := s.Deliver(context.Background(), Batch{Stream: "a", Token: 1, Rows: rows(`[1]`)})
	if !errors.Is(err, ErrSinkUnavailable) || !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("err = %v", err)
	}
	// A row that is not JSON is refused before anything is written.
	s2 := NewWriterSink("stdout", &bytes.Buffer{})
	if err := s2.Deliver(context.Background(), Batch{Stream: "a", Token: 1, Rows: rows(`[1`)}); err == nil {
		t.Fatal("invalid row JSON accepted")
	}
}

func TestParseSinkSpec(t *testing.T) {
	tests := []struct {
		spec, kind, arg string
		ok              bool
	}{
		{"stdout", "stdout", "", true},
		{"file:/data/rows.jsonl", "file", "/data/rows.jsonl", true},
		{"http:http://hook:8080/rows", "http", "http://hook:8080/rows", true},
		{"http://hook:8080/rows", "http", "http://hook:8080/rows", true},
		{"https://hook/rows", "", "", false}, // must be spelt http:https://...
		{"http:https://hook/rows", "http", "https://hook/rows", true},
		{"http:hook/rows", "", "", false},
		{"file:", "", "", false},
		{"kafka:x", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		kind, arg, err := ParseSinkSpec(tt.spec)
		if tt.ok != (err == nil) || kind != tt.kind || arg != tt.arg {
			t.Errorf("ParseSinkSpec(%q) = %q, %q, %v", tt.spec, kind, arg, err)
		}
		if err != nil && !errors.Is(err, ErrBadSinkSpec) {
			t.Errorf("ParseSinkSpec(%q) error %v does not wrap ErrBadSinkSpec", tt.spec, err)
		}
	}
}

func TestFileSinkAppendAndRecover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	s, err := OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := s.Recover(); last != nil {
		t.Fatalf("empty file recovered %v", last)
	}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Deliver(ctx, Batch{Stream: "events", Token: 1, Rows: rows(`[1]`)}))
	must(s.Deliver(ctx, Batch{Stream: "caches", Token: 7, Rows: rows(`[2]`, `[3]`, `[4]`)}))
	must(s.Close())

	s, err = OpenFileSink(path)
	must(err)
	last, err := s.Recover()
	must(err)
	if last == nil || *last != (Position{"caches", 7}) {
		t.Fatalf("recovered %v, want caches/7", last)
	}
	must(s.Deliver(ctx, Batch{Stream: "events", Token: 2, Rows: rows(`[5]`)}))
	must(s.Close())
	got := readLines(t, path)
	if len(got) != 5 || got[4].Token != 2 || got[3].Index != 2 || got[3].Count != 3 {
		t.Fatalf("lines = %+v", got)
	}
}

// TestFileSinkRepairsTail writes whole batches, then simulates crashes that
// left a torn tail, and checks the file is cut back to the last whole batch.
func TestFileSinkRepairsTail(t *testing.T) {
	whole := `{"stream":"events","token":1,"index":0,"count":1,"row":[1]}` + "\n" +
		`{"stream":"events","token":2,"index":0,"count":2,"row":[2]}` + "\n" +
		`{"stream":"events","token":2,"index":1,"count":2,"row":[3]}` + "\n"
	tests := []struct {
		name     string
		tail     string
		wantLast *Position
		wantSize int
	}{
		{"clean", "", &Position{"events", 2}, len(whole)},
		{"cut mid-line", `{"stream":"events","tok`, &Position{"events", 2}, len(whole)},
		{"cut inside the prefix", `{"str`, &Position{"events", 2}, len(whole)},
		{"half a batch", `{"stream":"caches","token":3,"index":0,"count":3,"row":[4]}` + "\n" +
			`{"stream":"caches","token":3,"index":1,"count":3,"row":[5]}` + "\n" + `{"stre`, &Position{"events", 2}, len(whole)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rows.jsonl")
			if err := os.WriteFile(path, []byte(whole+tt.tail), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := OpenFileSink(path)
			if err != nil {
				t.Fatal(err)
			}
			defer closeT(t, s)
			last, _ := s.Recover()
			if fmt.Sprint(last) != fmt.Sprint(tt.wantLast) {
				t.Fatalf("last = %v, want %v", last, tt.wantLast)
			}
			st, _ := os.Stat(path)
			if st.Size() != int64(tt.wantSize) {
				t.Fatalf("size = %d, want %d", st.Size(), tt.wantSize)
			}
		})
	}
}

func TestFileSinkOnlyPartialBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	partial := `{"stream":"caches","token":3,"index":0,"count":2,"row":[4]}` + "\n"
	if err := os.WriteFile(path, []byte(partial), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closeT(t, s)
	if last, _ := s.Recover(); last != nil {
		t.Fatalf("last = %v, want none", last)
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatalf("partial batch not cut: size %d", st.Size())
	}
}

// TestFileSinkLargeFile puts the last whole batch's start before the first
// 64 KiB chunk read from the end, so the backward scan has to grow.
func TestFileSinkLargeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	s, err := OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	big := `["` + strings.Repeat("x", 10000) + `"]`
	var rs []json.RawMessage
	for range 20 { // ~200 KB batch
		rs = append(rs, json.RawMessage(big))
	}
	ctx := context.Background()
	if err := s.Deliver(ctx, Batch{Stream: "a", Token: 1, Rows: rows(`[0]`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(ctx, Batch{Stream: "a", Token: 2, Rows: rs}); err != nil {
		t.Fatal(err)
	}
	closeT(t, s)
	st, _ := os.Stat(path)
	// Append 19 of a 20-row batch: the file must go back to token 2.
	var buf bytes.Buffer
	if err := encodeBatch(&buf, Batch{Stream: "a", Token: 3, Rows: rs}); err != nil {
		t.Fatal(err)
	}
	cut := bytes.LastIndexByte(buf.Bytes()[:buf.Len()-1], '\n') + 1
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.Write(buf.Bytes()[:cut])
	f.Close()

	s, err = OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closeT(t, s)
	last, _ := s.Recover()
	if last == nil || *last != (Position{"a", 2}) {
		t.Fatalf("last = %v, want a/2", last)
	}
	st2, _ := os.Stat(path)
	if st2.Size() != st.Size() {
		t.Fatalf("size %d, want %d", st2.Size(), st.Size())
	}
}

func TestFileSinkRefusesForeignFile(t *testing.T) {
	for name, content := range map[string]string{
		"text with newline":  "hello\nworld\n",
		"text without":       "hello world",
		"JSON but not ours":  `{"a": 1}` + "\n",
		"bad index":          `{"stream":"a","token":1,"index":3,"count":2,"row":[1]}` + "\n",
		"ours, then foreign": `{"stream":"a","token":1,"index":0,"count":1,"row":[1]}` + "\nnotes\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := OpenFileSink(path)
			if !errors.Is(err, ErrSinkFile) {
				t.Fatalf("err = %v, want ErrSinkFile", err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != content {
				t.Fatalf("foreign file modified: %q", got)
			}
		})
	}
	if _, err := OpenFileSink(filepath.Join(t.TempDir(), "missing", "f")); !errors.Is(err, ErrSinkFile) {
		t.Fatalf("missing dir: err = %v", err)
	}
}

func TestFileSinkWriteFailureLeavesNoPartialBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	s, err := OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Deliver(ctx, Batch{Stream: "a", Token: 1, Rows: rows(`[1]`)}); err != nil {
		t.Fatal(err)
	}
	s.f.Close() // the disk went away
	err = s.Deliver(ctx, Batch{Stream: "a", Token: 2, Rows: rows(`[2]`)})
	if !errors.Is(err, ErrSinkFile) {
		t.Fatalf("err = %v, want ErrSinkFile", err)
	}
	if last, _ := s.Recover(); last == nil || last.Token != 1 {
		t.Fatalf("failed delivery moved the position: %v", last)
	}
}

func TestHTTPSinkRetriesUntilAccepted(t *testing.T) {
	var mu sync.Mutex
	var got []HTTPBody
	var keys []string
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch n {
		case 1:
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		case 2:
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		var b HTTPBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, b)
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	var errs []error
	s := NewHTTPSink(srv.URL, HTTPSinkConfig{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		OnError: func(err error) { errs = append(errs, err) }})
	defer closeT(t, s)
	if err := s.Deliver(context.Background(), Batch{Stream: "caches", Token: 9, Rows: rows(`[1]`, `[2]`)}); err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 || !errors.Is(errs[0], ErrSinkUnavailable) || !errors.Is(errs[1], ErrSinkRejected) {
		t.Fatalf("errors seen = %v, want unavailable then rejected", errs)
	}
	if s.Err() != nil {
		t.Fatalf("Err() = %v after success", s.Err())
	}
	if len(got) != 1 || got[0].Stream != "caches" || got[0].Token != 9 || len(got[0].Rows) != 2 || keys[0] != "caches/9" {
		t.Fatalf("received %+v keys %v", got, keys)
	}
	if s.String() != "http:"+srv.URL {
		t.Fatal(s.String())
	}
}

func TestHTTPSinkDownUntilCancelled(t *testing.T) {
	url := "http://" + refusedAddr(t) // nothing listens: connection refused
	s := NewHTTPSink(url, HTTPSinkConfig{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Deliver(ctx, Batch{Stream: "a", Token: 1, Rows: rows(`[1]`)}) }()
	deadline := time.Now().Add(10 * time.Second)
	for s.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no error recorded while the endpoint is down")
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(s.Err(), ErrSinkUnavailable) {
		t.Fatalf("Err() = %v, want ErrSinkUnavailable", s.Err())
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrSinkUnavailable) {
		t.Fatalf("Deliver after cancel = %v, want context.Canceled wrapping the last attempt", err)
	}
}

// closeT closes c and fails the test if that fails.
func closeT(t *testing.T, c io.Closer) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestFileSinkPositionsAfter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	s, err := OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closeT(t, s)
	ctx := context.Background()
	if err := s.Deliver(ctx, Batch{Stream: "events", Token: 1, Rows: rows(`[1]`)}); err != nil {
		t.Fatal(err)
	}
	mid := s.Size()
	for _, b := range []Batch{
		{Stream: "events", Token: 2, Rows: rows(`[2]`, `[3]`)},
		{Stream: "typing", Token: 7, Rows: rows(`[4]`)},
		{Stream: "events", Token: 5, Rows: rows(`[5]`)},
	} {
		if err := s.Deliver(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.PositionsAfter(mid)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["events"] != 5 || got["typing"] != 7 {
		t.Fatalf("PositionsAfter(mid) = %v", got)
	}
	if got, err := s.PositionsAfter(s.Size()); err != nil || len(got) != 0 {
		t.Fatalf("PositionsAfter(end) = %v, %v", got, err)
	}
	if got, err := s.PositionsAfter(0); err != nil || got["events"] != 5 {
		t.Fatalf("PositionsAfter(0) = %v, %v", got, err)
	}
	if _, err := s.PositionsAfter(s.Size() + 1); !errors.Is(err, ErrSinkFile) || !strings.Contains(err.Error(), "truncated or replaced") {
		t.Fatalf("offset past the end: err = %v", err)
	}
	if _, err := s.PositionsAfter(mid - 3); !errors.Is(err, ErrSinkFile) || !strings.Contains(err.Error(), "line boundary") {
		t.Fatalf("offset inside a line: err = %v", err)
	}
}

// Issue 11 item 6: two workers (different state dirs) with one sink file
// overwrote each other silently. The file is locked as the state dir is.
func TestFileSinkIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	first, err := OpenFileSink(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Deliver(context.Background(), Batch{Stream: "caches", Token: 1, Rows: []json.RawMessage{json.RawMessage(`[1]`)}}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err = OpenFileSink(path)
	if !errors.Is(err, ErrSinkFileInUse) || !errors.Is(err, ErrSinkFile) || !strings.Contains(err.Error(), "its own sink file") {
		t.Fatalf("second OpenFileSink: %v, want ErrSinkFileInUse saying what to do", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("the refused open changed the file: %q -> %q", before, after)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenFileSink(path)
	if err != nil {
		t.Fatalf("open after the first worker closed it: %v", err)
	}
	_ = again.Close()
}
