package worker

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// TestClassifyRemoteErrors: what the master said decides whether the
// worker reports it unreachable (it will be back, or another master will
// serve) or refused (what the worker asked cannot be served).
func TestClassifyRemoteErrors(t *testing.T) {
	cfg := Config{Address: "master:9092", ServerName: "hs.example"}
	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"standby during a takeover": {&replication.RemoteError{Message: replication.StandbyMessage}, ErrMasterUnreachable},
		"master shutting down":      {&replication.RemoteError{Message: "server shutting down"}, ErrMasterUnreachable},
		"token older than the log":  {&replication.RemoteError{Message: "token 5 of events is older than the oldest token held (9)"}, ErrMasterRefused},
		"wrapped standby":           {fmt.Errorf("replicate: %w", &replication.RemoteError{Message: replication.StandbyMessage}), ErrMasterUnreachable},
		"dial failure":              {errors.New("connection refused"), ErrMasterUnreachable},
	} {
		t.Run(name, func(t *testing.T) {
			if got := classify(cfg, tc.err); !errors.Is(got, tc.want) {
				t.Fatalf("classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
