package worker

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenFileSink feeds arbitrary file contents to the file sink's tail
// repair and checks it against a line-by-line reading of the same bytes:
//   - a refused file is left exactly as it was, and a file whose every
//     complete line is a row line (with at most a cut-short line after
//     them) is never refused;
//   - a repaired file is a prefix of the original ending with a line that
//     closes a batch, and what was cut holds no complete line that closes
//     a batch and no line that is not a row line: the repair removes only
//     a batch cut short, never a whole batch (emptying a file of whole
//     batches fails), and never damage it should have refused;
//   - for a file of row lines, the repair keeps exactly the lines up to
//     the last one that closes a batch.
func FuzzOpenFileSink(f *testing.F) {
	whole := `{"stream":"events","token":1,"index":0,"count":1,"row":[1]}` + "\n" +
		`{"stream":"events","token":2,"index":0,"count":2,"row":[2]}` + "\n" +
		`{"stream":"events","token":2,"index":1,"count":2,"row":[3]}` + "\n"
	for _, seed := range []string{
		"", whole, whole + `{"stream":"ty`, whole + `{"stream":"caches","token":3,"index":0,"count":2,"row":[4]}` + "\n",
		"hello\n", "{}\n", whole + "notes\n", `{"stream":"a","token":1,"index":0,"count":1,"row":[1]}`,
		whole + `{"stream":"caches","token":3,"index":0,"count":2,"row":[4]}` + "\n" + `{"str`,
		"notes\n" + whole,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "rows.jsonl")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ref := readSinkLines(data)
		s, err := OpenFileSink(path)
		after, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if !bytes.Equal(after, data) {
				t.Fatalf("refused file was modified: %q -> %q", data, after)
			}
			if ref.allRowLines {
				t.Fatalf("a file of row lines was refused (%v): %q", err, data)
			}
			return
		}
		defer closeT(t, s)
		if !bytes.HasPrefix(data, after) {
			t.Fatalf("repaired file is not a prefix: %q -> %q", data, after)
		}
		if int64(len(after)) != s.Size() {
			t.Fatalf("Size() = %d, file has %d bytes", s.Size(), len(after))
		}
		cut := readSinkLines(data[len(after):])
		if cut.closesBatch {
			t.Fatalf("the repair cut a whole batch: %q -> %q", data, after)
		}
		if !cut.allRowLines {
			t.Fatalf("the repair cut a line that is not a row line instead of refusing the file: %q -> %q", data, after)
		}
		if ref.allRowLines && len(after) != ref.lastBatchEnd {
			t.Fatalf("repaired to %d bytes, want %d (through the last line closing a batch): %q", len(after), ref.lastBatchEnd, data)
		}
		last, _ := s.Recover()
		if len(after) == 0 {
			if last != nil {
				t.Fatalf("empty file recovered %v", last)
			}
			return
		}
		if after[len(after)-1] != '\n' {
			t.Fatalf("repaired file does not end with a newline: %q", after)
		}
		lines := bytes.Split(after[:len(after)-1], []byte("\n"))
		l, ok := rowLine(lines[len(lines)-1])
		if !ok || l.Index != l.Count-1 {
			t.Fatalf("repaired file does not end with a whole batch: %q", after)
		}
		if last == nil || last.Stream != l.Stream || last.Token != l.Token {
			t.Fatalf("Recover() = %v, last line %+v", last, l)
		}
	})
}

// sinkLines is what a front-to-back reading of sink file bytes finds.
type sinkLines struct {
	// allRowLines: every complete line is a row line, and what follows
	// the last newline is a row line cut short (a prefix of one's start,
	// or starting like one).
	allRowLines bool
	// closesBatch: some complete line is a row line closing its batch.
	closesBatch bool
	// lastBatchEnd is the offset just past the last complete row line
	// closing a batch (0 if none).
	lastBatchEnd int
}

func readSinkLines(data []byte) sinkLines {
	out := sinkLines{allRowLines: true}
	at := 0
	for {
		nl := bytes.IndexByte(data[at:], '\n')
		if nl < 0 {
			frag := data[at:]
			if len(frag) > 0 && !bytes.HasPrefix(frag, linePrefix) && !bytes.HasPrefix(linePrefix, frag) {
				out.allRowLines = false
			}
			return out
		}
		l, ok := rowLine(data[at : at+nl])
		at += nl + 1
		switch {
		case !ok:
			out.allRowLines = false
		case l.Index == l.Count-1:
			out.closesBatch = true
			out.lastBatchEnd = at
		}
	}
}

// rowLine decodes one line as the sink writes it: a JSON Line with a
// stream, a row, and an index within its batch's count.
func rowLine(b []byte) (Line, bool) {
	var l Line
	if err := json.Unmarshal(b, &l); err != nil || l.Stream == "" || l.Count < 1 || l.Index < 0 || l.Index >= l.Count || len(l.Row) == 0 {
		return l, false
	}
	return l, true
}
