package streamlog_test

import (
	"testing"

	"github.com/tcprepl/tcprepl/internal/master/logtest"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
)

// TestBehaviourSuite runs the stream log contract shared with the
// PostgreSQL log (internal/master/logtest) against Pebble.
func TestBehaviourSuite(t *testing.T) {
	logtest.Run(t, func(t testing.TB) logtest.Store {
		dir := t.TempDir()
		return func(t testing.TB, cfg logtest.Config) logtest.Log {
			keep := streamlog.Retention{MaxRows: cfg.MaxRows, MaxAge: cfg.MaxAge}
			l, err := streamlog.Open(streamlog.Options{
				Dir:              dir,
				Streams:          cfg.Streams,
				DefaultRetention: keep,
				TrimInterval:     -1,
				TailCacheBytes:   cfg.TailCacheBytes,
				Now:              cfg.Now,
			})
			if err != nil {
				t.Fatalf("open Pebble log: %v", err)
			}
			return l
		}
	})
}
