package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/bench"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

func newBenchCommand() *cobra.Command {
	var (
		cfg        bench.Config
		spawn      bool
		output     string
		cpuProfile string
		phases     []string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a master: durable publish, fan-out, catch-up, latency, memory",
		Long: `Benchmark a tcprepl master over real TCP.

By default a master runs inside this process on a temporary data directory
(a durable, fsynced log). --spawn runs "tcprepl master" as a child process
instead, so its peak RSS and per-connection memory are its own. --master and
--http measure a master started elsewhere (give --master-pid for its RSS).

Phases: idle connections (memory each), catch-up of --catchup-rows rows to 1
and to 10 subscribers, publishing as fast as --publishers can (in-process
when the master is, and over HTTP) with --subscribers live subscribers, and
publish-to-deliver latency at --latency-rate rows/s. Rows go to the caches
stream.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.MasterAddr != "" || cfg.HTTPURL != "":
				cfg.Mode = bench.External
			case spawn:
				cfg.Mode = bench.Spawn
			default:
				cfg.Mode = bench.InProcess
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output %q: use text or json", output)
			}
			if cfg.PublishToken == "" {
				cfg.PublishToken = os.Getenv(masterapi.PublishTokenEnv)
			}
			errw := cmd.ErrOrStderr()
			cfg.Logf = func(format string, args ...any) { fmt.Fprintf(errw, "bench: "+format+"\n", args...) }
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			for _, p := range phases {
				cfg.Phases = append(cfg.Phases, bench.Phase(p))
			}
			cfg.Defaults()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("create the CPU profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("start the CPU profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			res, err := bench.Run(ctx, cfg)
			if res != nil {
				if output == "json" {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					if eerr := enc.Encode(res); eerr != nil && err == nil {
						err = eerr
					}
				} else {
					printBench(cmd.OutOrStdout(), cfg, res)
				}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.MasterAddr, "master", "", "replication address of an external master (with --http)")
	fl.StringVar(&cfg.HTTPURL, "http", "", "HTTP API URL of an external master, e.g. http://127.0.0.1:9093")
	fl.IntVar(&cfg.MasterPID, "master-pid", 0, "process id of the external master, to read its peak RSS")
	fl.BoolVar(&spawn, "spawn", false, "run the master as a child process (tcprepl master) instead of in this process")
	fl.StringVar(&cfg.ServerName, "server-name", "bench.tcprepl", "server name of the master")
	fl.StringVar(&cfg.PublishToken, "publish-token", "", "bearer token for publishing (default $"+masterapi.PublishTokenEnv+")")
	fl.StringVar(&cfg.DataDir, "data-dir", "", "log directory of an in-process or spawned master (default: a temporary directory)")
	fl.DurationVar(&cfg.Duration, "duration", 0, "length of each publish and latency phase (default 5s)")
	fl.IntVar(&cfg.Subscribers, "subscribers", 0, "live subscribers (default 10)")
	fl.StringVar((*string)(&cfg.SubscriberKind), "subscriber", string(bench.WireSubscribers), "subscriber kind: wire (split lines, check tokens, count rows: measures the master) or client (a full replication client that parses every line and validates every row)")
	fl.IntVar(&cfg.Publishers, "publishers", 0, "concurrent publishers (default 32)")
	fl.IntVar(&cfg.BatchRows, "batch", 0, "rows per publish (default 100)")
	fl.IntVar(&cfg.RowBytes, "row-bytes", 0, "approximate bytes of one row (default 100)")
	fl.IntVar(&cfg.CatchUpRows, "catchup-rows", 0, "rows the catch-up subscribers read (default 1000000)")
	fl.IntVar(&cfg.LatencyRate, "latency-rate", 0, "rows/s published in the latency phase (default 100000)")
	fl.IntVar(&cfg.IdleConns, "idle-conns", 0, "connections opened to measure memory per idle connection (default 1000)")
	fl.StringVarP(&output, "output", "o", "text", "text or json")
	fl.StringSliceVar(&phases, "phases", nil, "phases to run, comma-separated: idle, catchup, publish-inprocess, publish-http, latency (default all)")
	fl.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of this process (the master too when in-process) to this file, for go tool pprof")
	return cmd
}

func printBench(w io.Writer, cfg bench.Config, r *bench.Results) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "master\t%s\tsubscribers: %s\n", r.Mode, r.Subscribers)
	for _, t := range r.Throughput {
		fmt.Fprintf(tw, "publish (%s, %d publishers, batch %d)\t%.0f rows/s durable\t%d rows in %.1fs\n", t.Publisher, cfg.Publishers, cfg.BatchRows, t.PublishRowsPerSec, t.Rows, t.Seconds)
		fmt.Fprintf(tw, "  delivered to %d subscribers\t%.0f rows/s in all\tslowest %.0f rows/s, drained %.2fs after the last publish\n", t.Subscribers, t.DeliveredRowsPerSec, t.SlowestSubscriberRowsPerSec, t.DrainSeconds)
		printCPU(tw, t.CPU)
	}
	for _, c := range r.CatchUp {
		fmt.Fprintf(tw, "catch-up, %d subscriber(s)\t%.0f rows/s in all\t%d rows each in %.2fs\n", c.Subscribers, c.RowsPerSec, c.RowsEach, c.Seconds)
		printCPU(tw, c.CPU)
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(tw, "latency at %d rows/s, %d subscribers\tp50 %s\tp99 %s, max %s (%d samples, %.0f rows/s achieved)\n", l.RateRowsPerSec, l.Subscribers, l.P50, l.P99, l.Max, l.Samples, l.AchievedRate)
		fmt.Fprintf(tw, "  of which publish to durable ack\tp50 %s\tp99 %s\n", l.AckP50, l.AckP99)
	}
	fmt.Fprintf(tw, "peak RSS\t%.1f MiB\t%s\n", float64(r.PeakRSSBytes)/(1<<20), r.PeakRSSOf)
	if r.BytesPerIdleConn > 0 {
		fmt.Fprintf(tw, "memory per idle connection\t%.1f KiB\t%s\n", r.BytesPerIdleConn/1024, r.IdleConnMethod)
	} else {
		fmt.Fprintf(tw, "memory per idle connection\t-\t%s\n", r.IdleConnMethod)
	}
	_ = tw.Flush()
}

func printCPU(w io.Writer, c bench.CPU) {
	in := ""
	if c.CPUMicrosPerRowIn > 0 {
		in = fmt.Sprintf("%.2f us/row published, ", c.CPUMicrosPerRowIn)
	}
	clients := ""
	if c.ClientCoresUsed > 0 {
		clients = fmt.Sprintf("; benchmark clients %.2f cores", c.ClientCoresUsed)
	}
	fmt.Fprintf(w, "  CPU\t%.2f cores used\t%s%.2f us/row delivered (load average %s%s)\n", c.ProcessCPUUtilised, in, c.CPUMicrosPerRowOut, c.LoadAverageAtTheTime, clients)
}
