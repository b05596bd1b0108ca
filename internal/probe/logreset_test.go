package probe

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// swappableLog is a master's log that can be replaced whole, as a wiped
// data directory or an ephemeral master's restart replaces it.
type swappableLog struct {
	mu  sync.Mutex
	src *replication.MemorySource
	id  string
}

func newLog(id string, tokens int) (*replication.MemorySource, string) {
	src := replication.NewMemorySource("caches")
	for i := 1; i <= tokens; i++ {
		src.Append("caches", probetest.Row(i))
	}
	return src, id
}

func (l *swappableLog) cur() *replication.MemorySource {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src
}

func (l *swappableLog) replace(src *replication.MemorySource, id string) {
	l.mu.Lock()
	l.src, l.id = src, id
	l.mu.Unlock()
}

func (l *swappableLog) Streams() []string { return l.cur().Streams() }
func (l *swappableLog) CurrentToken(s string) (int64, error) {
	return l.cur().CurrentToken(s)
}

func (l *swappableLog) ReadAfter(ctx context.Context, s string, after, upTo int64, limit int) ([]replication.Update, error) {
	return l.cur().ReadAfter(ctx, s, after, upTo, limit)
}

func (l *swappableLog) LogID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.id
}

// Issue 11 item 1: the probe reports the master's log id, and flags a
// stream whose token goes backwards (the master's log was reset).
func TestProbeReportsLogIDAndFlagsATokenGoingBack(t *testing.T) {
	const oldID, newID = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	src, id := newLog(oldID, 5)
	log := &swappableLog{src: src, id: id}
	srv, err := replication.NewServer(replication.ServerConfig{ServerName: testServerName}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; !errors.Is(err, replication.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	proxy := probetest.StartProxy(t, ln.Addr().String())

	p := runProbe(t, fastConfig(t, proxy.Addr()))
	waitFor(t, 10*time.Second, "the old log's position and id", func() bool {
		s := p.Snapshot()
		return position(s, "caches") == 5 && s.LogID == oldID
	})
	if s := p.Snapshot(); s.Error != nil || len(s.Warnings) != 0 || s.Streams[0].WentBackFrom != 0 {
		t.Fatalf("healthy master flagged: %+v", s)
	}

	log.replace(newLog(newID, 2)) // wiped: tokens start again
	proxy.Sever()
	waitFor(t, 10*time.Second, "the new log observed", func() bool {
		s := p.Snapshot()
		return position(s, "caches") == 2 && s.LogID == newID
	})
	s := p.Snapshot()
	if s.LogChangedFrom != oldID || s.Streams[0].WentBackFrom != 5 {
		t.Fatalf("log reset not flagged: logChangedFrom %q, stream %+v", s.LogChangedFrom, s.Streams[0])
	}
	if s.Error != nil || !s.Reachable {
		t.Fatalf("a master whose log was reset is still reachable: %v", s.Error)
	}
	if len(s.Warnings) != 1 || !strings.HasPrefix(s.Warnings[0], ErrLogReset.Error()) || !strings.Contains(s.Warnings[0], "caches 5 -> 2") || !strings.Contains(s.Warnings[0], "--resync") {
		t.Fatalf("snapshot warnings %q, want the log reset naming the stream and the way out", s.Warnings)
	}
	var out strings.Builder
	if err := WriteTable(&out, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "WARNING:") || !strings.Contains(out.String(), "Log id:") || !strings.Contains(out.String(), "WENT BACK from 5") || !strings.Contains(out.String(), "LOG CHANGED") {
		t.Fatalf("table does not show the reset:\n%s", out.String())
	}
}
