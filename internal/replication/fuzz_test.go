package replication

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzParseCommand feeds arbitrary lines to the parser. It must never panic;
// what it accepts must format, and the formatted line must parse back to the
// same command (rows and keys in their Python form) and format identically.
func FuzzParseCommand(f *testing.F) {
	if data, err := os.ReadFile("testdata/protocol_examples.txt"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if len(l) > 2 {
				f.Add([]byte(l[2:]))
			}
		}
	}
	for _, tc := range canonicalLines {
		f.Add([]byte(tc.line))
	}
	for _, s := range []string{"PING", "PING 1\r", "", " ", "RDATA caches batch [1]", "REPLICATE ALL NOW",
		"REPLICATE ALL 1", "USER_SYNC a b c", "FOO", "RDATA a b c", "POSITION x 99999999999999999999",
		"USER_IP u [\"a\", \"b\", \"c\", null, 1]", "INVALIDATE_CACHE f [\"\\ud800\"]", "PING \xff", "PING \x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := ParseCommand(line)
		if err != nil {
			var perr *ProtocolError
			if !errors.As(err, &perr) {
				t.Fatalf("ParseCommand(%q) error %T, want *ProtocolError", line, err)
			}
			if strings.ContainsAny(perr.Error(), "\n") {
				t.Fatalf("error text for %q spans lines: %q", line, perr.Error())
			}
			return
		}
		out, err := FormatCommand(cmd)
		if err != nil {
			// Free text may hold characters a sender refuses (a CR inside).
			if strings.Contains(err.Error(), "newline") {
				return
			}
			t.Fatalf("parsed %q to %#v, which does not format: %v", line, cmd, err)
		}
		back, err := ParseCommand(out)
		if err != nil {
			t.Fatalf("formatted %#v as %q, which does not parse: %v", cmd, out, err)
		}
		if !reflect.DeepEqual(canonical(t, back), canonical(t, cmd)) {
			t.Fatalf("round trip of %q: %#v became %#v", line, cmd, back)
		}
		again, err := FormatCommand(back)
		if err != nil || string(again) != string(out) {
			t.Fatalf("format not stable: %q then %q (%v)", out, again, err)
		}
	})
}

// canonical rewrites a command's JSON into its Python form, so commands can
// be compared whatever spacing they were parsed with.
func canonical(t *testing.T, c Command) Command {
	py := func(raw json.RawMessage) json.RawMessage {
		out, err := AppendPythonJSON(nil, raw)
		if err != nil {
			t.Fatalf("parsed JSON %q does not re-encode: %v", raw, err)
		}
		return out
	}
	switch c := c.(type) {
	case RdataCommand:
		c.Row = py(c.Row)
		if c.Batch {
			c.Token = 0
		}
		return c
	case InvalidateCacheCommand:
		c.Keys = py(c.Keys)
		return c
	}
	return c
}

// FuzzServerInput sends arbitrary bytes to a live server connection, then a
// line the server must refuse. Whatever came before, the server must answer
// with well-formed server lines only, end with an ERROR, and close: never a
// panic, never a hang.
func FuzzServerInput(f *testing.F) {
	for _, tc := range canonicalLines {
		f.Add([]byte(tc.line + "\n"))
	}
	for _, s := range []string{
		"PING\nNAME x\r\nREPLICATE caches 0\n", "REPLICATE ALL NOW\nUSER_SYNC @a:x start 1\n",
		"\n\n   \r\n", "RDATA caches 1 []\n", "REPLICATE nosuch 1\n", "PING \xff\n", "NAME a\x00b\n",
		strings.Repeat("x", DefaultMaxLineLength+10), "REPLICATE caches NOW\nREPLICATE caches 1\nREPLICATE caches now\n",
	} {
		f.Add([]byte(s))
	}
	src := NewMemorySource("caches", "events")
	for i := 1; i <= 20; i++ {
		src.Append("caches", cacheRow(i))
	}
	srv, err := NewServer(ServerConfig{ServerName: "fuzz"}, src, &recordingHandler{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		defer client.Close()
		if !srv.startConn(server) {
			t.Fatal("server refused the connection")
		}
		_ = client.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			// The server may close before reading it all: write errors
			// are expected then.
			_, _ = client.Write(input)
			_, _ = client.Write([]byte("\nNOT_A_COMMAND\n"))
		}()
		out, err := io.ReadAll(client)
		if err != nil {
			t.Fatalf("reading the server: %v (got %q)", err, out)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		for _, l := range lines {
			cmd, err := ParseCommand([]byte(l))
			if err != nil || !SentByServer(cmd.Name()) {
				t.Fatalf("server sent %q (%v)", l, err)
			}
		}
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "ERROR ") {
			t.Fatalf("server closed without an ERROR; last line %q", last)
		}
	})
}

// FuzzClientInput is FuzzServerInput's mirror: arbitrary bytes from a
// server after its SERVER line, then a line a client must refuse. The client
// must send only well-formed client lines, end with an ERROR and close.
func FuzzClientInput(f *testing.F) {
	for _, tc := range canonicalLines {
		f.Add([]byte(tc.line + "\n"))
	}
	for _, s := range []string{
		"POSITION caches 3\nRDATA caches batch [1]\nRDATA caches 4 [2]\n", "RDATA caches x []\n", "PING\n",
		"ERROR bye\n", "SYNC s\n", "RDATA caches 1 [\n", "SERVER other\n", strings.Repeat("y", DefaultMaxLineLength+5),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		defer server.Close()
		var dialed atomic.Bool
		c, err := NewClient(ClientConfig{
			Address: "pipe", ServerName: "fuzz", Handler: newRecordingClientHandler(), InitialBackoff: time.Hour,
			Streams: []StreamRequest{{Stream: "caches", Token: 0}},
			Dial: func(context.Context, string, string) (net.Conn, error) {
				if dialed.Swap(true) {
					return nil, errors.New("only one connection in this test")
				}
				return client, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		}()
		_ = server.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			_, _ = server.Write([]byte("SERVER fuzz\n"))
			_, _ = server.Write(input)
			_, _ = server.Write([]byte("\nNAME not-for-clients\n"))
		}()
		out, err := io.ReadAll(server)
		if err != nil {
			t.Fatalf("reading the client: %v (got %q)", err, out)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		for _, l := range lines {
			cmd, err := ParseCommand([]byte(l))
			if err != nil || !SentByClient(cmd.Name()) {
				t.Fatalf("client sent %q (%v)", l, err)
			}
		}
		// A failing handler closes without an ERROR; nothing else should.
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "ERROR ") {
			t.Fatalf("client closed without an ERROR; last line %q", last)
		}
	})
}
