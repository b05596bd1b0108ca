package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

type masterFlags struct {
	configFile       string
	serverName       string
	replication      string
	http             string
	dataDir          string
	ephemeral        bool
	federation       bool
	customStreams    []string
	publishTokenFile string
	logBackend       string
	postgresDSNFile  string
	readTokenFile    string
	tls              masterapi.TLS
	shutdownTimeout  time.Duration
	verbosity        int
}

func newMasterCommand() *cobra.Command {
	var f masterFlags
	cmd := &cobra.Command{
		Use:   "master",
		Short: "Run the replication master: durable streams, the replication protocol server and the HTTP API",
		Long: `Run the replication master.

Rows published over HTTP (POST /v1/streams/{stream}/rows) are validated,
stored durably in the stream log, then sent to every subscribed worker over
the replication protocol. Settings come from --config (YAML) and flags; a
flag given on the command line wins over the file. SIGTERM or SIGINT shuts
down gracefully: stop accepting, send "ERROR server shutting down" to every
connection, flush the log, exit 0. SIGHUP, or a change to the --config file's
content, applies the settings that can change live without dropping a
connection; others are logged as awaiting a restart (docs/operations.md).

Both listeners default to loopback (127.0.0.1): without TLS client
certificates the replication protocol has no authentication, and publishing
needs no token unless one is configured, so listening on other interfaces
must be asked for with --replication-listen and --http-listen (the operator
passes the pod IP). With --tls-cert-file both listeners speak TLS; with
--tls-client-ca-file replication clients are identified by their
certificate, and the config file's access.rules say which may send which
commands and read which streams (docs/security.md).

If a write to the log fails (a full or failing disk), /healthz and /readyz
answer 503 and the master shuts down and exits 1 without flushing the failed
log, so that it is restarted and re-reads what is really on disk.

With --log postgres several masters of one server may run at once: one is
active, the others are standbys (/readyz 503, role "standby") that take the
log over within seconds when the active one dies or freezes. A master that
loses the log (fenced, or PostgreSQL failed a commit) stops serving and
becomes a standby again instead of exiting (docs/operations.md, "Failover
and fencing").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cmd.ErrOrStderr(), f.verbosity)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			ctx = withConfigReload(ctx, cmd, &f, logger) // master_reload.go
			return runMaster(ctx, cfg, logger, f.shutdownTimeout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "YAML config file (see docs/api.md); flags given on the command line override it")
	fl.StringVar(&f.serverName, "server-name", "", "server name announced with SERVER; workers check it (required)")
	fl.StringVar(&f.replication, "replication-listen", masterapi.DefaultReplicationListen, "address for the replication protocol")
	fl.StringVar(&f.http, "http-listen", masterapi.DefaultHTTPListen, "address for the HTTP API, /metrics and health checks")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory of the durable stream log; empty keeps the log in memory")
	fl.BoolVar(&f.ephemeral, "ephemeral", false, "keep the log in memory: nothing survives a restart")
	fl.BoolVar(&f.federation, "federation", false, "publish the federation stream (FEDERATION_ACK trims it)")
	fl.StringSliceVar(&f.customStreams, "custom-stream", nil, "extra stream NAME or NAME:FIELDS (rows must have FIELDS fields); repeatable")
	fl.StringVar(&f.publishTokenFile, "publish-token-file", "", "file holding the bearer token required to publish (default: $"+masterapi.PublishTokenEnv+" if set, else no token)")
	fl.StringVar(&f.logBackend, "log", masterapi.LogPebble, "where the stream log lives: pebble (--data-dir, the default) or postgres (--postgres-dsn-file)")
	fl.StringVar(&f.postgresDSNFile, "postgres-dsn-file", "", "file holding the PostgreSQL connection URI for --log postgres (default: $"+masterapi.PostgresDSNEnv+")")
	fl.StringVar(&f.readTokenFile, "read-token-file", "", "file holding the bearer token of GET /v1/userips (the publish token opens it too; default: $"+masterapi.ReadTokenEnv+")")
	fl.StringVar(&f.tls.CertFile, "tls-cert-file", "", "PEM server certificate: the replication and HTTP listeners speak TLS (re-read when it changes)")
	fl.StringVar(&f.tls.KeyFile, "tls-key-file", "", "PEM key of --tls-cert-file")
	fl.StringVar(&f.tls.ClientCAFile, "tls-client-ca-file", "", "PEM CAs of replication client certificates; clients are then identified by their certificate")
	fl.StringVar(&f.tls.ClientAuth, "tls-client-auth", "", "with --tls-client-ca-file: require (default; no certificate, no connection) or optional")
	fl.StringVar(&f.tls.PlaintextReplicationListen, "plaintext-replication-listen", "", "with TLS: also serve replication without TLS on this address, for Synapse 2020 peers (off by default; its clients are unauthenticated)")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 20*time.Second, "how long a graceful shutdown may take before connections are cut")
	fl.IntVarP(&f.verbosity, "verbosity", "v", 0, "log verbosity (0: info; higher: more detail)")
	addReloadFlags(cmd)
	cmd.AddCommand(newMigrateCommand())
	return cmd
}

// config merges the config file and the flags set on the command line.
func (f *masterFlags) config(cmd *cobra.Command) (masterapi.Config, error) {
	var cfg masterapi.Config
	if f.configFile != "" {
		var err error
		if cfg, err = masterapi.LoadConfigFile(f.configFile); err != nil {
			return cfg, err
		}
	}
	set := cmd.Flags().Changed
	if set("server-name") {
		cfg.ServerName = f.serverName
	}
	if set("replication-listen") || cfg.ReplicationListen == "" {
		cfg.ReplicationListen = f.replication
	}
	if set("http-listen") || cfg.HTTPListen == "" {
		cfg.HTTPListen = f.http
	}
	if set("data-dir") {
		cfg.DataDir = f.dataDir
	}
	if set("ephemeral") {
		cfg.Ephemeral = f.ephemeral
		if f.ephemeral {
			// --ephemeral on the command line overrides a dataDir in the file.
			cfg.DataDir = ""
		}
	}
	if set("federation") {
		cfg.Federation = f.federation
	}
	if set("custom-stream") {
		cfg.CustomStreams = nil
		for _, s := range f.customStreams {
			cs, err := masterapi.ParseCustomStream(s)
			if err != nil {
				return cfg, err
			}
			cfg.CustomStreams = append(cfg.CustomStreams, cs)
		}
	}
	if set("publish-token-file") {
		cfg.PublishTokenFile = f.publishTokenFile
	}
	if set("log") {
		cfg.Log.Backend = f.logBackend
	}
	if set("postgres-dsn-file") {
		cfg.Log.PostgresDSNFile = f.postgresDSNFile
	}
	if set("read-token-file") {
		cfg.Access.ReadTokenFile = f.readTokenFile
	}
	for _, o := range []struct {
		flag     string
		dst, src *string
	}{
		{"tls-cert-file", &cfg.TLS.CertFile, &f.tls.CertFile},
		{"tls-key-file", &cfg.TLS.KeyFile, &f.tls.KeyFile},
		{"tls-client-ca-file", &cfg.TLS.ClientCAFile, &f.tls.ClientCAFile},
		{"tls-client-auth", &cfg.TLS.ClientAuth, &f.tls.ClientAuth},
		{"plaintext-replication-listen", &cfg.TLS.PlaintextReplicationListen, &f.tls.PlaintextReplicationListen},
	} {
		if set(o.flag) {
			*o.dst = *o.src
		}
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid master configuration: %w", err)
	}
	return cfg, nil
}

// runMaster runs a master until ctx is done, then shuts it down gracefully.
// With the PostgreSQL log it runs as standby or active master in turn
// (runPostgresMaster).
func runMaster(ctx context.Context, cfg masterapi.Config, logger logr.Logger, shutdownTimeout time.Duration) error {
	if cfg.Log.Backend == masterapi.LogPostgres {
		return runPostgresMaster(ctx, cfg, logger, shutdownTimeout)
	}
	opts := master.Options{Logger: logger}
	m, err := master.New(cfg, opts)
	if err != nil {
		if opts.Log != nil {
			_ = opts.Log.Close()
		}
		return err
	}
	defer watchConfig(ctx, m)()
	return m.Run(ctx, shutdownTimeout)
}

// newLogger writes structured JSON lines, one per event, as log collectors
// in Kubernetes expect.
func newLogger(w io.Writer, verbosity int) logr.Logger {
	if w == nil {
		w = os.Stderr
	}
	return funcr.NewJSON(func(obj string) { _, _ = fmt.Fprintln(w, obj) }, funcr.Options{
		LogTimestamp:    true,
		TimestampFormat: time.RFC3339Nano,
		Verbosity:       verbosity,
	})
}
