package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcprepl/tcprepl/internal/replication"
	"github.com/tcprepl/tcprepl/internal/worker"
)

type workerFlags struct {
	tls           tlsClientFlags
	master        string
	serverName    string
	name          string
	streams       string
	stateDir      string
	sink          string
	from          int64
	metricsListen string
	saveInterval  time.Duration
	resync        bool
	onLogChange   string
	verbosity     int

	keepHeartbeats bool
}

func newWorkerCommand() *cobra.Command {
	var f workerFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the reference worker: replicate streams into stdout, a file or an HTTP endpoint",
		Long: `Replicate streams from a master and hand every batch of rows to a sink:

  stdout        one JSON line per row: {"stream","token","index","count","row"}
  file:PATH     the same lines appended to PATH, exactly once across restarts
  http:URL      POST {"stream","token","rows"} per batch, retried with backoff
                until the endpoint answers 2xx (Idempotency-Key: stream/token)

Positions are saved in --state-dir after the sink has taken each batch, so a
restart resumes after the last delivered token. The first start replicates
from now on, or after --from. SIGTERM or SIGINT stops cleanly.

The positions are saved with the identity of the master's log. If the master
later serves another log (its data was wiped, or it runs ephemeral and
restarted), its tokens mean other rows: the worker exits with "the master's
log is not the one the saved positions belong to" instead of skipping them.
Start it once with --resync to drop the saved positions and replay the new
log after --from (default 0), or run it with --on-log-change=resync to do
that by itself.

--master, --server-name and --name fall back to TCPREPL_MASTER_ADDRESS,
TCPREPL_SERVER_NAME and TCPREPL_WORKER_NAME, which the operator injects.`,
		Example: `  tcprepl worker --master master:9092 --server-name matrix.example.org --streams events,caches --state-dir /data --sink stdout
  tcprepl worker --master 127.0.0.1:9092 --server-name localhost --streams ALL --state-dir ./state --sink file:rows.jsonl
  tcprepl worker --streams events --state-dir /data --sink http:http://hook:8080/rows --from 0 --metrics-listen :8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(cmd.ErrOrStderr(), f.verbosity)
			reg := prometheus.NewRegistry()
			for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
				if err := reg.Register(c); err != nil {
					return fmt.Errorf("register runtime metrics: %w", err)
				}
			}
			cfg, err := f.config(cmd, os.Getenv)
			if err != nil {
				return err
			}
			cfg.Logger, cfg.Registerer = logger, reg
			cfg.Stdout = cmd.OutOrStdout()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runWorker(ctx, cfg, reg, f.metricsListen, logger)
		},
	}
	f.addFlags(cmd.Flags())
	return cmd
}

func (f *workerFlags) addFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.master, "master", "", "the master's replication address HOST:PORT (default $"+envMasterAddress+")")
	fl.StringVar(&f.serverName, "server-name", "", "the name the master must announce with SERVER (default $"+envServerName+")")
	fl.StringVar(&f.name, "name", "", "connection name shown in the master's connection table (default $"+envWorkerName+", else the host name)")
	fl.StringVar(&f.streams, "streams", "", "comma-separated streams to replicate, or ALL (required)")
	fl.StringVar(&f.stateDir, "state-dir", "", "directory for the durable positions; must survive restarts (required)")
	fl.StringVar(&f.sink, "sink", "stdout", "where rows go: stdout, file:PATH or http:URL")
	fl.Int64Var(&f.from, "from", 0, "first start only: replicate the rows after this token instead of from now (e.g. --from 0 for everything retained)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "address for /metrics, /healthz, /readyz and /v1/status, e.g. :8080 (empty: none)")
	fl.BoolVar(&f.keepHeartbeats, "keep-heartbeats", false, "also hand the operator probe's heartbeat rows (caches rows of the cache "+replication.HeartbeatCacheName+") to the sink; by default they are left out")
	fl.DurationVar(&f.saveInterval, "save-interval", 100*time.Millisecond, "how often positions are saved while rows flow (also on every POSITION and on stop); a crash re-delivers at most this much to stdout/http sinks")
	fl.BoolVar(&f.resync, "resync", false, "drop the saved positions and master log id, and replicate every stream after --from (default 0): the way to resume after the master's log was replaced; give it once")
	fl.StringVar(&f.onLogChange, "on-log-change", "stop", "when the master serves another log than the saved positions belong to: stop (exit with an error; restart once with --resync) or resync (drop the positions and replay the new log after --from, default 0, without exiting)")
	fl.IntVarP(&f.verbosity, "verbosity", "v", 0, "log verbosity (0: info; higher: more detail)")
	f.tls.register(fl)
}

// config builds the worker config from the flags, falling back to the
// environment the operator injects.
func (f *workerFlags) config(cmd *cobra.Command, getenv func(string) string) (worker.Config, error) {
	cfg := worker.Config{
		Address:    flagOrEnv(f.master, envMasterAddress, getenv),
		ServerName: flagOrEnv(f.serverName, envServerName, getenv),
		Name:       flagOrEnv(f.name, envWorkerName, getenv),
		StateDir:   f.stateDir,
		Sink:       f.sink,

		KeepHeartbeats: f.keepHeartbeats,
	}
	if f.saveInterval <= 0 {
		return cfg, fmt.Errorf("--save-interval %v: use a positive duration, e.g. 100ms", f.saveInterval)
	}
	cfg.SaveInterval = f.saveInterval
	for _, s := range strings.Split(f.streams, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Streams = append(cfg.Streams, s)
		}
	}
	if cmd.Flags().Changed("from") {
		from := f.from
		cfg.From = &from
	}
	cfg.Resync = f.resync
	tlsCfg, err := f.tls.config(getenv)
	if err != nil {
		return cfg, err
	}
	if tlsCfg != nil {
		cfg.Dial = tlsDial(tlsCfg)
	}
	switch f.onLogChange {
	case "stop":
	case "resync":
		cfg.ResyncOnLogChange = true
	default:
		return cfg, fmt.Errorf("--on-log-change %q: use stop or resync", f.onLogChange)
	}
	if cfg.StateDir == "" {
		return cfg, errors.New("no state dir: pass --state-dir DIR (a directory that survives restarts, e.g. a volume)")
	}
	return cfg, nil
}

// runWorker runs the worker and, if asked, its HTTP endpoints, until ctx
// ends.
func runWorker(ctx context.Context, cfg worker.Config, reg *prometheus.Registry, metricsListen string, logger logr.Logger) error {
	// Listen first: a taken port is reported before the worker locks its
	// state dir and opens its sink.
	var ln net.Listener
	if metricsListen != "" {
		var err error
		if ln, err = net.Listen("tcp", metricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", metricsListen, err)
		}
	}
	w, err := worker.New(cfg)
	if err != nil {
		if ln != nil {
			_ = ln.Close() // the worker's error is the one to report
		}
		return err
	}
	var srv *http.Server
	served := make(chan error, 1)
	if ln != nil {
		srv = &http.Server{Handler: w.HTTPHandler(reg), ReadHeaderTimeout: 10 * time.Second}
		logger.Info("worker metrics serving", "metrics", ln.Addr().String())
		go func() { served <- srv.Serve(ln) }()
	}
	runErr := w.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			logger.Error(err, "stopping the metrics server")
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(err, "metrics server")
		}
	}
	if runErr == nil {
		logger.Info("worker stopped", "positions", w.Status().Positions)
	}
	return runErr
}
