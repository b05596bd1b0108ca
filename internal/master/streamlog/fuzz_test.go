package streamlog

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// FuzzAppendRead: Append never panics on arbitrary bytes; what it accepts is
// read back exactly as returned, in Python's json.dumps form, one line, and
// what it refuses consumes no token.
func FuzzAppendRead(f *testing.F) {
	for _, seed := range []string{`[1]`, `["é", {"a": [1, 2]}, null]`, `[`, `{}`, "[\"\xff\"]", " [ 1 ,\n 2 ] ", `[1] [2]`, `"x"`, `[1e400, -0.0]`} {
		f.Add([]byte(seed), []byte(`[2]`))
	}
	l := openTest(f, Options{Ephemeral: true, Streams: []string{"s"}, MaxLineLength: 16384})
	defer closeTest(f, l)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		before, _ := l.CurrentToken("s")
		u, err := l.Append(context.Background(), "s", []json.RawMessage{a, b})
		after, _ := l.CurrentToken("s")
		if err != nil {
			if after != before {
				t.Fatalf("refused append moved the token from %d to %d", before, after)
			}
			return
		}
		if u.Token != before+1 || after != u.Token {
			t.Fatalf("token %d, before %d, current %d", u.Token, before, after)
		}
		for i, in := range [][]byte{a, b} {
			want, perr := replication.AppendPythonJSON(nil, in)
			if perr != nil || !bytes.Equal(u.Rows[i], want) {
				t.Fatalf("row %d stored as %q, want %q (%v)", i, u.Rows[i], want, perr)
			}
			if bytes.ContainsAny(u.Rows[i], "\r\n") || u.Rows[i][0] != '[' {
				t.Fatalf("row %d not one JSON array line: %q", i, u.Rows[i])
			}
		}
		us, err := l.ReadAfter(context.Background(), "s", before, u.Token, 1)
		if err != nil || len(us) != 1 || len(us[0].Rows) != 2 {
			t.Fatalf("read back: %v %v", us, err)
		}
		for i := range us[0].Rows {
			if !bytes.Equal(us[0].Rows[i], u.Rows[i]) {
				t.Fatalf("row %d read back as %q, stored %q", i, us[0].Rows[i], u.Rows[i])
			}
		}
	})
}
