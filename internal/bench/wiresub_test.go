package bench

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func newTestWireSub() *wireSub {
	return &wireSub{s: &subscriber{done: make(chan error, 1)}, stream: Stream, server: "bench.tcprepl",
		rdata: []byte("RDATA " + Stream + " "), pos: []byte("POSITION " + Stream + " ")}
}

func TestWireSubscriberCountsRows(t *testing.T) {
	w := newTestWireSub()
	w.s.record.Store(true)
	lines := []string{
		"SERVER bench.tcprepl",
		"POSITION caches 3",
		`RDATA caches batch ["a", [1], 100]`,
		`RDATA caches batch ["a", [2], 100]`,
		`RDATA caches 4 ["a", [3], 100]`,
		"PING 1490197670513",
		`RDATA caches 7 ["b", [4], 200]`,
	}
	for _, l := range lines {
		if err := w.line([]byte(l)); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
	}
	if got := w.s.rows.Load(); got != 4 {
		t.Errorf("rows %d, want 4", got)
	}
	if got := w.s.lastTok.Load(); got != 7 {
		t.Errorf("last token %d, want 7", got)
	}
	if !w.s.caught.Load() {
		t.Error("not caught up after POSITION")
	}
	if len(w.s.latency) != 2 {
		t.Errorf("%d latency samples, want one per update (2)", len(w.s.latency))
	}
}

func TestWireSubscriberRefusesWrongLines(t *testing.T) {
	for name, tc := range map[string]struct {
		lines []string
		want  string
	}{
		"wrong server name":   {[]string{"SERVER other"}, `calls itself "other"`},
		"token goes back":     {[]string{`RDATA caches 5 [1]`, `RDATA caches 5 [2]`}, "out of order"},
		"token not a number":  {[]string{`RDATA caches five [1]`}, `token "five"`},
		"RDATA without a row": {[]string{`RDATA caches`}, "RDATA of a stream not asked for"},
		"RDATA with no token": {[]string{`RDATA caches  [1]`}, "malformed RDATA"},
		"another stream":      {[]string{`RDATA events 1 [1]`}, "not asked for"},
		"ERROR":               {[]string{`ERROR Failed to keep up`}, "ERROR Failed to keep up"},
		"POSITION mid-batch":  {[]string{`RDATA caches batch [1]`, "POSITION caches 9"}, "middle of a batch"},
		"POSITION of another": {[]string{"POSITION events 9"}, "not asked for"},
		"POSITION bad token":  {[]string{"POSITION caches x"}, "POSITION line"},
		"unknown command":     {[]string{"HELLO"}, "unexpected line"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newTestWireSub()
			var err error
			for _, l := range tc.lines {
				if err = w.line([]byte(l)); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWireSubscriberReadLoop(t *testing.T) {
	for name, tc := range map[string]struct {
		send string
		want string
	}{
		"closed mid-line": {"SERVER bench.tcprepl\nRDATA caches 1 [1]\nRDATA cach", "unexpected EOF"},
		"line too long":   {"SERVER bench.tcprepl\n" + strings.Repeat("x", wireReadBuffer), "longer than"},
		"ERROR":           {"ERROR server shutting down\n", "server shutting down"},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := net.Pipe()
			w := newTestWireSub()
			w.conn = a
			go func() {
				_, _ = b.Write([]byte(tc.send))
				_ = b.Close()
			}()
			err := w.readLoop()
			_ = a.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if p := w.s.failed.Load(); p == nil || !errors.Is(*p, err) {
				t.Fatalf("failure not recorded as the loop's error: %v", p)
			}
		})
	}
}
