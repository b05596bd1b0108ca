package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

type migrateFlags struct {
	configFile      string
	serverName      string
	dataDir         string
	federation      bool
	customStreams   []string
	postgresDSNFile string
	verbosity       int
}

func newMigrateCommand() *cobra.Command {
	var f migrateFlags
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy a master's Pebble log (--data-dir) into an empty PostgreSQL database",
		Long: `Copy a stopped master's Pebble stream log into PostgreSQL, so that the
master can run with --log postgres from where it stopped.

Every stream of the master's configuration (give the same --config, or
--server-name, --federation and --custom-stream, as the master) is copied
with its retained tokens, rows, publish times and oldest retained token,
and so is the log's identity: the copy is the same log, so workers resume
from the tokens they saved rather than seeing a new log. Everything is
written in one transaction: a failed migration leaves the database as it
was, and a database that already holds a log (a master opened it, or a
migration ran) is refused.

Stop the Pebble master first (its data directory is locked while it runs);
start the PostgreSQL master after the migration succeeded. docs/operations.md
"Moving a Pebble log to PostgreSQL" walks through it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return f.run(ctx, cmd)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "the master's YAML config file: server name, streams, dataDir and log.postgresDSNFile are read from it; flags override it")
	fl.StringVar(&f.serverName, "server-name", "", "the master's server name (required unless in --config)")
	fl.StringVar(&f.dataDir, "data-dir", "", "the Pebble log's directory (required unless in --config)")
	fl.BoolVar(&f.federation, "federation", false, "the master publishes the federation stream: copy it too")
	fl.StringSliceVar(&f.customStreams, "custom-stream", nil, "the master's extra stream NAME or NAME:FIELDS: copy it too; repeatable")
	fl.StringVar(&f.postgresDSNFile, "postgres-dsn-file", "", "file holding the PostgreSQL connection URI of the empty target database (default: $"+masterapi.PostgresDSNEnv+")")
	fl.IntVarP(&f.verbosity, "verbosity", "v", 0, "log verbosity (0: info; higher: more detail)")
	return cmd
}

// config merges the config file and the flags.
func (f *migrateFlags) config(cmd *cobra.Command) (masterapi.Config, error) {
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
	if set("data-dir") {
		cfg.DataDir = f.dataDir
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
	if set("postgres-dsn-file") {
		cfg.Log.PostgresDSNFile = f.postgresDSNFile
	}
	cfg = cfg.WithDefaults()
	switch {
	case cfg.ServerName == "":
		return cfg, errors.New("no server name: pass --server-name (or --config) as given to the master; the log records the server it belongs to")
	case cfg.DataDir == "":
		return cfg, errors.New("no Pebble log to copy: pass --data-dir (or --config with dataDir), the master's data directory")
	}
	// Checked as the Pebble master it was: the config file may already be
	// the PostgreSQL master's.
	pebble := cfg
	pebble.Log = masterapi.LogConfig{Backend: masterapi.LogPebble}
	if err := pebble.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid master configuration: %w", err)
	}
	return cfg, nil
}

func (f *migrateFlags) run(ctx context.Context, cmd *cobra.Command) error {
	cfg, err := f.config(cmd)
	if err != nil {
		return err
	}
	dsn, err := cfg.PostgresDSN()
	if err != nil {
		return fmt.Errorf("no target database: %w", err)
	}
	logger := newLogger(cmd.ErrOrStderr(), f.verbosity)
	// Retention and the tail cache off: the copy reads exactly what is
	// stored, and nothing is trimmed while it reads.
	src, err := streamlog.Open(streamlog.Options{Dir: cfg.DataDir, Streams: cfg.Streams(), TrimInterval: -1, TailCacheBytes: -1,
		Logger: logger.WithName("streamlog")})
	if err != nil {
		return fmt.Errorf("open the Pebble log in %s (stop the master that uses it first): %w", cfg.DataDir, err)
	}
	defer func() { _ = src.Close() }()
	copied, err := pglog.Import(ctx, src, pglog.ImportOptions{DSN: dsn, ServerName: cfg.ServerName, Streams: cfg.Streams(), Logger: logger.WithName("migrate")})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "copied log %s of %s into PostgreSQL\n", src.LogID(), cfg.ServerName)
	fmt.Fprintln(tw, "STREAM\tTOKENS\tROWS")
	for _, s := range copied {
		tokens := "none (position " + fmt.Sprint(s.Current) + ")"
		if s.Current >= s.Oldest {
			tokens = fmt.Sprintf("%d-%d", s.Oldest, s.Current)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", s.Stream, tokens, s.Rows)
	}
	fmt.Fprintf(tw, "start the master with --log postgres on this database; keep %s until it serves\n", cfg.DataDir)
	return tw.Flush()
}
