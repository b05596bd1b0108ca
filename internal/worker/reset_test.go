package worker

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
)

// TestWorkerPositionAheadOfMaster: a master whose log was reset is behind
// the worker's saved position. The worker must not skip the new log's rows
// silently: it is refused, stays not ready, and says what to do.
func TestWorkerPositionAheadOfMaster(t *testing.T) {
	m := probetest.Start(t, testServerName, "events")
	publishSeq(m, "events", 0, 3)
	cfg := baseConfig(t, m.Addr())
	cfg.Streams = []string{"events"}
	cfg.Sink = "stdout"
	cfg.Stdout = io.Discard
	cfg.From = from(120)
	w, _ := startWorker(t, cfg)
	waitFor(t, 10*time.Second, "the refusal", func() bool { return errors.Is(w.Status().ConnectionError, ErrMasterRefused) })
	st := w.Status()
	if st.Ready {
		t.Fatal("a worker refused by its master reports ready")
	}
	if msg := st.ConnectionError.Error(); !strings.Contains(msg, "token 120 is ahead of this server's newest token") || !strings.Contains(msg, "reset the subscriber's saved position") {
		t.Fatalf("error %q should say the master is behind and what to do", msg)
	}
}
