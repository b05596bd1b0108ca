package worker

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenFileSink feeds arbitrary file contents to the file sink's tail
// repair. Either the file is refused and left exactly as it was, or it is cut
// to a prefix that ends with a whole batch of well-formed lines.
func FuzzOpenFileSink(f *testing.F) {
	whole := `{"stream":"events","token":1,"index":0,"count":1,"row":[1]}` + "\n" +
		`{"stream":"events","token":2,"index":0,"count":2,"row":[2]}` + "\n" +
		`{"stream":"events","token":2,"index":1,"count":2,"row":[3]}` + "\n"
	for _, seed := range []string{
		"", whole, whole + `{"stream":"ty`, whole + `{"stream":"caches","token":3,"index":0,"count":2,"row":[4]}` + "\n",
		"hello\n", "{}\n", whole + "notes\n", `{"stream":"a","token":1,"index":0,"count":1,"row":[1]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "rows.jsonl")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := OpenFileSink(path)
		after, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if !bytes.Equal(after, data) {
				t.Fatalf("refused file was modified: %q -> %q", data, after)
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
		if len(after) == 0 {
			if last, _ := s.Recover(); last != nil {
				t.Fatalf("empty file recovered %v", last)
			}
			return
		}
		if after[len(after)-1] != '\n' {
			t.Fatalf("repaired file does not end with a newline: %q", after)
		}
		lines := bytes.Split(after[:len(after)-1], []byte("\n"))
		var l Line
		if err := json.Unmarshal(lines[len(lines)-1], &l); err != nil || l.Index != l.Count-1 {
			t.Fatalf("repaired file does not end with a whole batch: %q", after)
		}
		last, _ := s.Recover()
		if last == nil || last.Stream != l.Stream || last.Token != l.Token {
			t.Fatalf("Recover() = %v, last line %+v", last, l)
		}
	})
}
