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
		logs       []string
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
stream.

--log pebble,postgres runs the same phases once per stream log, one after
the other in this one command, and prints them side by side. The PostgreSQL
log runs on a scratch database the benchmark creates on the server of
--postgres-dsn (its role needs CREATEDB) and drops at the end.
--tail-cache-bytes -1 turns the master's tail cache off, so that catch-up
reads the log itself (Pebble or PostgreSQL) rather than memory.`,
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
			var all []*bench.Results
			var err error
			for _, l := range logs {
				c := cfg
				c.Log = l
				if len(logs) > 1 {
					logf := cfg.Logf
					c.Logf = func(format string, args ...any) { logf("["+l+"] "+format, args...) }
				}
				var res *bench.Results
				res, err = bench.Run(ctx, c)
				if res != nil {
					all = append(all, res)
				}
				if err != nil {
					err = fmt.Errorf("%s log: %w", l, err)
					break
				}
			}
			if len(all) > 0 {
				if output == "json" {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					var v any = all
					if len(logs) == 1 {
						v = all[0]
					}
					if eerr := enc.Encode(v); eerr != nil && err == nil {
						err = eerr
					}
				} else {
					for i, res := range all {
						if i > 0 {
							fmt.Fprintln(cmd.OutOrStdout())
						}
						printBench(cmd.OutOrStdout(), cfg, res)
					}
					if len(all) > 1 {
						fmt.Fprintln(cmd.OutOrStdout())
						printSideBySide(cmd.OutOrStdout(), all)
					}
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
	fl.StringSliceVar(&logs, "log", []string{bench.LogPebble}, "stream log(s) of the master the benchmark starts, comma-separated, measured one after the other: pebble, postgres")
	fl.StringVar(&cfg.PostgresDSN, "postgres-dsn", "", "postgres:// URI of a PostgreSQL server for --log postgres; the benchmark creates (and drops) a scratch database there")
	fl.Int64Var(&cfg.TailCacheBytes, "tail-cache-bytes", 0, "the master's tail cache (default: the master's, 64 MiB); -1 turns it off so catch-up reads the log itself")
	fl.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of this process (the master too when in-process) to this file, for go tool pprof")
	return cmd
}

func printBench(w io.Writer, cfg bench.Config, r *bench.Results) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	log := ""
	if r.Log != "" {
		log = ", log " + r.Log
	}
	fmt.Fprintf(tw, "master\t%s%s\tsubscribers: %s\n", r.Mode, log, r.Subscribers)
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
	if c.DatabaseCoresUsed > 0 {
		fmt.Fprintf(w, "  PostgreSQL server CPU\t%.2f cores used\t%.2f us/row\n", c.DatabaseCoresUsed, c.DatabaseCPUMicrosPerRow)
	}
}

// printSideBySide prints the headline numbers of several runs (one per
// stream log) in columns.
func printSideBySide(w io.Writer, all []*bench.Results) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, r := range all {
		fmt.Fprintf(tw, "%s\t", r.Log)
	}
	fmt.Fprintln(tw)
	row := func(name string, v func(*bench.Results) string) {
		fmt.Fprintf(tw, "%s\t", name)
		for _, r := range all {
			fmt.Fprintf(tw, "%s\t", v(r))
		}
		fmt.Fprintln(tw)
	}
	for i, t := range all[0].Throughput {
		row("publish "+t.Publisher+" rows/s", func(r *bench.Results) string {
			if i < len(r.Throughput) {
				return fmt.Sprintf("%.0f", r.Throughput[i].PublishRowsPerSec)
			}
			return "-"
		})
		row("  slowest subscriber rows/s", func(r *bench.Results) string {
			if i < len(r.Throughput) {
				return fmt.Sprintf("%.0f", r.Throughput[i].SlowestSubscriberRowsPerSec)
			}
			return "-"
		})
		row("  CPU us/row, process + database", func(r *bench.Results) string {
			if i < len(r.Throughput) {
				c := r.Throughput[i].CPU
				return fmt.Sprintf("%.2f + %.2f", c.CPUMicrosPerRowIn, c.DatabaseCPUMicrosPerRow)
			}
			return "-"
		})
	}
	for i, c := range all[0].CatchUp {
		row(fmt.Sprintf("catch-up to %d rows/s", c.Subscribers), func(r *bench.Results) string {
			if i < len(r.CatchUp) {
				return fmt.Sprintf("%.0f", r.CatchUp[i].RowsPerSec)
			}
			return "-"
		})
	}
	if all[0].Latency != nil {
		row(fmt.Sprintf("p99 at %d rows/s", all[0].Latency.RateRowsPerSec), func(r *bench.Results) string {
			if r.Latency != nil {
				return r.Latency.P99.String()
			}
			return "-"
		})
	}
	_ = tw.Flush()
}
