package master

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
)

// ErrLogFailed is wrapped by Serve's error when the stream log failed a
// commit to disk: the master shuts down so that its supervisor restarts it,
// and the restart re-reads what is really on disk (as PostgreSQL does after
// an fsync failure; a retried fsync may report success for data the kernel
// has already dropped).
var ErrLogFailed = errors.New("stream log failed")

// failingLog is implemented by a StreamLog that can fail for good
// (streamlog.Log): Failed is closed with the first failed commit, Err says
// why.
type failingLog interface {
	Failed() <-chan struct{}
	Err() error
}

// logFailure returns why the log stopped taking writes, nil while healthy.
func (m *Master) logFailure() error {
	if fl, ok := m.store.(failingLog); ok {
		if err := fl.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrLogFailed, err)
		}
	}
	return nil
}

// watchLog shuts the master down when the log fails, until stop is closed.
func (m *Master) watchLog(stop <-chan struct{}) {
	fl, ok := m.store.(failingLog)
	if !ok {
		return
	}
	select {
	case <-stop:
		return
	case <-fl.Failed():
	}
	m.logger.Error(m.logFailure(), "the stream log failed a write; shutting down so the master restarts and re-reads its log")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = m.Shutdown(ctx)
}

// handleHealth is the liveness check: it fails once the log has failed, so
// that Kubernetes restarts a master that can no longer store rows even if
// the process has not exited yet.
func (m *Master) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if err := m.logFailure(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady answers 200 with role "active" while the master serves. A
// master whose PostgreSQL log failed or was fenced answers role "standby":
// it is on its way back to waiting for the log.
func (m *Master) handleReady(w http.ResponseWriter, _ *http.Request) {
	if err := m.logFailure(); err != nil {
		if errors.Is(err, pglog.ErrFailed) {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error(), "role": RoleStandby})
			return
		}
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	switch {
	case m.closing.Load():
		writeError(w, http.StatusServiceUnavailable, "shutting down")
	case !m.serving.Load():
		writeError(w, http.StatusServiceUnavailable, "not serving yet")
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "role": RoleActive})
	}
}
