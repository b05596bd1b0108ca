package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcprepl/tcprepl/internal/probe"
)

// Environment variables the operator injects into worker pods; the probe CLI
// reads the same ones, so running it inside a worker pod needs no flags.
const (
	envMasterAddress = "TCPREPL_MASTER_ADDRESS"
	envServerName    = "TCPREPL_SERVER_NAME"
	envWorkerName    = "TCPREPL_WORKER_NAME"
)

type probeFlags struct {
	master     string
	serverName string
	httpURL    string
	output     string
	watch      bool
	interval   time.Duration
	wait       time.Duration
	verbosity  int
	redis      redisProbeFlags
	tls        tlsClientFlags
}

func newProbeCommand() *cobra.Command {
	var f probeFlags
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Show a master's stream positions, heartbeat latency and worker lag",
		Long: `Connect to a master as a replication client (NAME tcprepl-probe), subscribe
to every stream, time an INVALIDATE_CACHE heartbeat relayed back on the caches
stream, and read the master's connection table (--http) for every worker's
lag. Prints a table (-o table) or JSON (-o json) once, or again every
--interval with --watch.

Exits 1 when the master is unreachable, announces another server name, breaks
the protocol, or its HTTP API cannot be read; the message names which.

With --redis instead of --master, watch a Synapse deployment of today (v1.67
and later) on the Redis it replicates over: subscribe to the server name's
channel, publish REPLICATE so that every process announces its positions, and
show per stream and writer the position, last advance, rates, gaps and resets,
the configured writers that stay silent (--stream-writers) and Redis's pub/sub
buffers. The password comes from --redis-password-file or $TCPREPL_REDIS_PASSWORD,
never from a flag. Exits 1 when Redis is unreachable, refuses AUTH, or nothing
at all is heard on the channel.`,
		Example: `  tcprepl probe --master master:9092 --server-name matrix.example.org --http http://master:9093
  tcprepl probe --master 127.0.0.1:9092 --server-name localhost -o json
  tcprepl probe --master master:9092 --server-name matrix.example.org --watch
  tcprepl probe --redis redis:6379 --server-name matrix.example.org --stream-writers homeserver.yaml
  TCPREPL_REDIS_PASSWORD=... tcprepl probe --redis redis:6379 --server-name matrix.example.org -o json --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.redis.addr != "" {
				return runSynapseProbe(cmd, &f, os.Getenv)
			}
			cfg, err := f.config(cmd, os.Getenv)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if f.watch {
				return watchProbe(ctx, cmd.OutOrStdout(), cfg, f.output, f.interval)
			}
			return probeOnce(ctx, cmd.OutOrStdout(), cfg, f.output, f.wait)
		},
	}
	f.addFlags(cmd.Flags())
	return cmd
}

func (f *probeFlags) addFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.master, "master", "", "the master's replication address HOST:PORT (default $"+envMasterAddress+")")
	fl.StringVar(&f.serverName, "server-name", "", "the name the master must announce with SERVER (default $"+envServerName+")")
	fl.StringVar(&f.httpURL, "http", "", "the master's HTTP API, e.g. http://master:9093 (the master's default HTTP port), for the worker connections; omit for a master without one (Synapse)")
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fl.BoolVarP(&f.watch, "watch", "w", false, "keep probing and print again every --interval until interrupted")
	fl.DurationVar(&f.interval, "interval", 2*time.Second, "with --watch: how often to print (also the heartbeat interval)")
	fl.DurationVar(&f.wait, "wait", 5*time.Second, "without --watch: how long to wait for a first heartbeat and the connection table")
	fl.IntVarP(&f.verbosity, "verbosity", "v", -1, "log verbosity on stderr (-1: no logs; 0: info; higher: more detail)")
	f.tls.register(fl)
	f.redis.addFlags(fl)
}

// config builds the probe config from the flags, falling back to the
// environment for the master's address and name.
func (f *probeFlags) config(cmd *cobra.Command, getenv func(string) string) (probe.Config, error) {
	if f.output != "table" && f.output != "json" {
		return probe.Config{}, fmt.Errorf("--output %q: use table or json", f.output)
	}
	if f.interval <= 0 || f.wait <= 0 {
		return probe.Config{}, errors.New("--interval and --wait must be positive durations, e.g. 2s")
	}
	addr := flagOrEnv(f.master, envMasterAddress, getenv)
	name := flagOrEnv(f.serverName, envServerName, getenv)
	if addr == "" {
		return probe.Config{}, errors.New("no master address: pass --master HOST:PORT or set " + envMasterAddress)
	}
	if name == "" {
		return probe.Config{}, errors.New("no server name: pass --server-name NAME or set " + envServerName)
	}
	logger := logr.Discard()
	if f.verbosity >= 0 {
		logger = newLogger(cmd.ErrOrStderr(), f.verbosity)
	}
	cfg := probe.Config{
		Address:           addr,
		ServerName:        name,
		HTTPURL:           f.httpURL,
		HeartbeatInterval: f.interval,
		Logger:            logger,
	}
	tlsCfg, err := f.tls.config(getenv)
	if err != nil {
		return cfg, err
	}
	if tlsCfg != nil {
		cfg.Dial = tlsDial(tlsCfg)
		// The same CA opens an https:// --http URL.
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	}
	return cfg, nil
}

func flagOrEnv(flag, env string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	return getenv(env)
}

func render(w io.Writer, s probe.Snapshot, output string) error {
	if output == "json" {
		return probe.WriteJSON(w, s)
	}
	return probe.WriteTable(w, s, time.Now())
}

// probeOnce prints one snapshot; its error (the snapshot's) makes the exit
// status non-zero, after the snapshot is printed so the user sees what the
// probe did see.
func probeOnce(ctx context.Context, out io.Writer, cfg probe.Config, output string, wait time.Duration) error {
	snap, err := probe.Once(ctx, cfg, wait)
	if snap.MeasuredAt.IsZero() {
		return err // the config was refused before probing
	}
	if rerr := render(out, snap, output); rerr != nil {
		return rerr
	}
	return err
}

// watchProbe keeps one probe running and prints its snapshot every interval.
// Connection problems are shown, not fatal: it runs until interrupted.
func watchProbe(ctx context.Context, out io.Writer, cfg probe.Config, output string, interval time.Duration) error {
	p, err := probe.New(cfg)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-done
		case err := <-done:
			return err
		case <-t.C:
		}
		if output == "table" {
			// Clear the screen, like watch(1), so the table stays in place.
			if _, err := fmt.Fprint(out, "\x1b[H\x1b[2J"); err != nil {
				return fmt.Errorf("write to stdout: %w", err)
			}
		}
		if err := render(out, p.Snapshot(), output); err != nil {
			return err
		}
	}
}
