package pglog_test

import (
	"context"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/master/logtest"
	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestBehaviourSuite runs the stream log contract shared with the Pebble
// log (internal/master/logtest) against a real PostgreSQL.
func TestBehaviourSuite(t *testing.T) {
	srv := pgtest.Shared(t)
	logtest.Run(t, func(t testing.TB) logtest.Store {
		dsn := srv.NewDatabase(t)
		return func(t testing.TB, cfg logtest.Config) logtest.Log {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l, err := pglog.Open(ctx, pglog.Options{
				DSN:              dsn,
				ServerName:       "hs.example",
				Streams:          cfg.Streams,
				DefaultRetention: pglog.Retention{MaxRows: cfg.MaxRows, MaxAge: cfg.MaxAge},
				TrimInterval:     -1,
				TailCacheBytes:   cfg.TailCacheBytes,
				Now:              cfg.Now,
			})
			if err != nil {
				t.Fatalf("open PostgreSQL log: %v", err)
			}
			return l
		}
	})
}
