package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// TestRunOnPostgres runs the publish and catch-up phases against an
// in-process master on the PostgreSQL log, with the tail cache off so that
// catch-up reads the database; the server's CPU is reported, and the
// scratch database is gone afterwards.
func TestRunOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a master")
	}
	srv := pgtest.Shared(t)
	for _, mode := range []Mode{InProcess} { // Spawn: TestSpawnArgs checks its arguments
		t.Run(string(mode), func(t *testing.T) {
			cfg := Config{Mode: mode, Log: LogPostgres, PostgresDSN: srv.DSN("postgres"), TailCacheBytes: -1,
				Duration: 300 * time.Millisecond, Subscribers: 2, Publishers: 2, BatchRows: 10, CatchUpRows: 2000,
				Phases: []Phase{PhaseCatchUp, PhasePublishHTTP}}
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Log != LogPostgres || len(res.CatchUp) != 2 || res.CatchUp[0].RowsEach != 2000 || len(res.Throughput) != 1 || res.Throughput[0].Rows == 0 {
				t.Fatalf("results %+v", res)
			}
			if c := res.Throughput[0].CPU; c.DatabaseCPUMicrosPerRow <= 0 || c.DatabaseCoresUsed <= 0 {
				t.Fatalf("no PostgreSQL server CPU reported: %+v", c)
			}
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close(ctx) }()
			var left int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname LIKE 'tcprepl_bench_%'`).Scan(&left); err != nil || left != 0 {
				t.Fatalf("%d scratch databases left (%v)", left, err)
			}
		})
	}
}

// TestScratchDatabaseNeedsAURI: a keyword/value DSN cannot name another
// database, so it is refused with what to give instead.
func TestScratchDatabaseNeedsAURI(t *testing.T) {
	_, _, err := scratchDatabase(context.Background(), "host=db user=u password=secret")
	if err == nil || !strings.Contains(err.Error(), "postgres:// URI") {
		t.Fatalf("scratchDatabase: %v", err)
	}
	if got := redact("postgres://u:secret@db/x"); strings.Contains(got, "secret") {
		t.Fatalf("redact left the password: %s", got)
	}
}

// TestSpawnArgs: a spawned master gets the log and the tail cache the run
// asks for, the tail cache through a config file it can load.
func TestSpawnArgs(t *testing.T) {
	tests := map[string]struct {
		cfg      Config
		want     []string
		tailFile int64 // 0: no config file
	}{
		"pebble, default cache": {cfg: Config{ServerName: "s"}, want: []string{"--data-dir", "DATA"}},
		"postgres, cache off":   {cfg: Config{ServerName: "s", Log: LogPostgres, TailCacheBytes: -1}, want: []string{"--log", "postgres", "--postgres-dsn-file", "DIR/postgres-dsn", "--config", "DIR/master.yaml"}, tailFile: -1},
		"pebble, 1 MiB cache":   {cfg: Config{ServerName: "s", TailCacheBytes: 1 << 20}, want: []string{"--data-dir", "DATA", "--config", "DIR/master.yaml"}, tailFile: 1 << 20},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			mc, err := tc.cfg.masterConfig(dir+"/data", "postgres://db/x", dir)
			if err != nil {
				t.Fatal(err)
			}
			args, err := spawnArgs(mc, dir)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(args, " ")
			want := strings.NewReplacer("DATA", dir+"/data", "DIR", dir).Replace(strings.Join(tc.want, " "))
			if !strings.HasPrefix(got, "master --server-name s ") || !strings.HasSuffix(got, want) {
				t.Fatalf("args %q, want them to end in %q", got, want)
			}
			if tc.tailFile == 0 {
				return
			}
			loaded, err := masterapi.LoadConfigFile(dir + "/master.yaml")
			if err != nil || loaded.Storage.TailCacheBytes != tc.tailFile {
				t.Fatalf("config file: tail cache %d, %v; want %d", loaded.Storage.TailCacheBytes, err, tc.tailFile)
			}
		})
	}
}
