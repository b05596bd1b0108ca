package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// The stream log the benchmarked master runs on (Config.Log).
const (
	LogPebble   = masterapi.LogPebble
	LogPostgres = masterapi.LogPostgres
)

// scratchDatabase creates an empty database on the server of dsn (a
// postgres:// URI whose role may create databases) and returns its URI and
// a function that drops it. Every run gets its own, so that a run never
// measures a log an earlier run filled.
func scratchDatabase(ctx context.Context, dsn string) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, fmt.Errorf("--postgres-dsn %q: give a postgres:// URI (the benchmark creates a scratch database on that server)", redact(dsn))
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL to create the benchmark's database: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "tcprepl_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create the benchmark's scratch database %s: %w (the DSN's role needs CREATEDB)", name, err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return
		}
		defer func() { _ = c.Close(ctx) }()
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	scratch := *u
	scratch.Path = "/" + name
	return scratch.String(), drop, nil
}

// redact hides a password in a DSN for error messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}

// masterConfig is the configuration of an InProcess or Spawn master: the
// log backend, its DSN file (written into dir for PostgreSQL) and the
// tail cache.
func (c Config) masterConfig(dataDir, dsn, dir string) (masterapi.Config, error) {
	mc := masterapi.Config{ServerName: c.ServerName, Limits: masterapi.Limits{MaxRequestBytes: 64 << 20},
		Storage: masterapi.Storage{TailCacheBytes: c.TailCacheBytes}}
	if c.Log == LogPostgres {
		f := filepath.Join(dir, "postgres-dsn")
		if err := os.WriteFile(f, []byte(dsn), 0o600); err != nil {
			return mc, fmt.Errorf("write the PostgreSQL DSN file: %w", err)
		}
		mc.Log = masterapi.LogConfig{Backend: LogPostgres, PostgresDSNFile: f}
	} else {
		mc.DataDir = dataDir
	}
	return mc, nil
}

// newInProcessMaster builds the in-process master on its log, opened as
// `tcprepl master` opens it.
func newInProcessMaster(ctx context.Context, mc masterapi.Config) (*master.Master, error) {
	opts := master.Options{Logger: logr.Discard()}
	if mc.Log.Backend == LogPostgres {
		// WaitForPostgresLog answers /readyz while it waits; here on a
		// listener of its own that it closes when the log is open.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if opts.Log, err = master.WaitForPostgresLog(octx, mc.WithDefaults(), ln, logr.Discard(), nil); err != nil {
			return nil, err
		}
	}
	m, err := master.New(mc, opts)
	if err != nil && opts.Log != nil {
		_ = opts.Log.Close()
	}
	return m, err
}

// spawnArgs are the `tcprepl master` arguments of a spawned master; its
// storage settings go in a config file in dir.
func spawnArgs(mc masterapi.Config, dir string) ([]string, error) {
	args := []string{"master", "--server-name", mc.ServerName, "--replication-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}
	if mc.Log.Backend == LogPostgres {
		args = append(args, "--log", LogPostgres, "--postgres-dsn-file", mc.Log.PostgresDSNFile)
	} else {
		args = append(args, "--data-dir", mc.DataDir)
	}
	if mc.Storage.TailCacheBytes != 0 {
		b, err := yaml.Marshal(map[string]any{"storage": map[string]any{"tailCacheBytes": mc.Storage.TailCacheBytes}})
		if err != nil {
			return nil, err
		}
		f := filepath.Join(dir, "master.yaml")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return nil, fmt.Errorf("write the spawned master's config: %w", err)
		}
		args = append(args, "--config", f)
	}
	return args, nil
}
