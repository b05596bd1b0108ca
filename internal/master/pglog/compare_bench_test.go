package pglog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/master/logtest"
	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// BenchmarkDurableAppend runs the same durable append load against Pebble
// and PostgreSQL in one run (docs/benchmarks.md): batches of 100 rows,
// concurrent appenders sharing group commits; PostgreSQL with 1, 2 and 4
// commits in flight (Options.CommitConnections).
func BenchmarkDurableAppend(b *testing.B) {
	postgres := func(conns int) logtest.NewStore {
		return func(t testing.TB) logtest.Store {
			dsn := pgtest.Shared(t).NewDatabase(t)
			return func(t testing.TB, cfg logtest.Config) logtest.Log {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				l, err := pglog.Open(ctx, pglog.Options{DSN: dsn, ServerName: "bench", Streams: cfg.Streams, TrimInterval: -1, CommitConnections: conns})
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
		}
	}
	backends := map[string]logtest.NewStore{
		"pebble": func(t testing.TB) logtest.Store {
			dir := t.TempDir()
			return func(t testing.TB, cfg logtest.Config) logtest.Log {
				l, err := streamlog.Open(streamlog.Options{Dir: dir, Streams: cfg.Streams, TrimInterval: -1})
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
		},
		"postgres-1conns": postgres(1),
		"postgres-2conns": postgres(2),
		"postgres-4conns": postgres(4),
	}
	for _, backend := range []string{"pebble", "postgres-1conns", "postgres-2conns", "postgres-4conns"} {
		for _, appenders := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("log=%s/appenders=%d/batch=100", backend, appenders), func(b *testing.B) {
				logtest.BenchAppend(b, backends[backend], appenders, 100)
			})
		}
	}
}
