package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcprepl/tcprepl/internal/synapse"
)

// envRedisPassword carries the Redis password, which never goes in a flag
// (flags show in process lists).
const envRedisPassword = "TCPREPL_REDIS_PASSWORD"

// redisProbeFlags are the flags of `tcprepl probe --redis`: watching a
// Synapse deployment of today over its Redis.
type redisProbeFlags struct {
	addr            string
	user            string
	passwordFile    string
	db              int
	tls             bool
	caFile          string
	streamWriters   string
	solicitInterval time.Duration
}

func (f *redisProbeFlags) addFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.addr, "redis", "", "watch a Synapse deployment (v1.67+) on this Redis HOST:PORT instead of a tcprepl master")
	fl.StringVar(&f.user, "redis-user", "", "with --redis: the Redis ACL user (default: the default user)")
	fl.StringVar(&f.passwordFile, "redis-password-file", "", "with --redis: a file holding the Redis password (or set $"+envRedisPassword+")")
	fl.IntVar(&f.db, "redis-db", 0, "with --redis: the Redis db Synapse selects (pub/sub ignores it; an ACL may not)")
	fl.BoolVar(&f.tls, "redis-tls", false, "with --redis: connect with TLS")
	fl.StringVar(&f.caFile, "redis-ca", "", "with --redis-tls: PEM file of the CA that signed Redis's certificate (default: the system's)")
	fl.StringVar(&f.streamWriters, "stream-writers", "", "with --redis: the homeserver config (YAML) whose stream_writers say which instance writes which stream; reports missing and unexpected writers")
	fl.DurationVar(&f.solicitInterval, "solicit-interval", synapse.DefaultSolicitInterval, "with --redis --watch: how often to publish REPLICATE so every process re-announces (0: only on connect)")
}

// synapseConfig builds the watcher's config from the flags and environment.
func (f *probeFlags) synapseConfig(cmd *cobra.Command, getenv func(string) string) (synapse.Config, error) {
	var cfg synapse.Config
	if f.master != "" {
		return cfg, errors.New("--redis and --master exclude each other: --redis watches a Synapse deployment, --master a tcprepl master")
	}
	if f.output != "table" && f.output != "json" {
		return cfg, fmt.Errorf("--output %q: use table or json", f.output)
	}
	if f.interval <= 0 || f.wait <= 0 {
		return cfg, errors.New("--interval and --wait must be positive durations, e.g. 2s")
	}
	if f.redis.solicitInterval < 0 {
		return cfg, errors.New("--solicit-interval must not be negative (0: only on connect)")
	}
	name := flagOrEnv(f.serverName, envServerName, getenv)
	if name == "" {
		return cfg, errors.New("no server name: pass --server-name NAME (the homeserver's server_name, which is also the Redis channel) or set " + envServerName)
	}
	password := getenv(envRedisPassword)
	if f.redis.passwordFile != "" {
		b, err := os.ReadFile(f.redis.passwordFile)
		if err != nil {
			return cfg, fmt.Errorf("--redis-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	var tlsConfig *tls.Config
	if f.redis.caFile != "" && !f.redis.tls {
		return cfg, errors.New("--redis-ca needs --redis-tls")
	}
	if f.redis.tls {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if f.redis.caFile != "" {
			pem, err := os.ReadFile(f.redis.caFile)
			if err != nil {
				return cfg, fmt.Errorf("--redis-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return cfg, fmt.Errorf("--redis-ca %s: no PEM certificate in it", f.redis.caFile)
			}
			tlsConfig.RootCAs = pool
		}
	}
	var writers map[string][]string
	if f.redis.streamWriters != "" {
		b, err := os.ReadFile(f.redis.streamWriters)
		if err != nil {
			return cfg, fmt.Errorf("--stream-writers: %w", err)
		}
		if writers, err = synapse.ParseStreamWriters(b); err != nil {
			return cfg, fmt.Errorf("--stream-writers %s: %w", f.redis.streamWriters, err)
		}
	}
	logger := logr.Discard()
	if f.verbosity >= 0 {
		logger = newLogger(cmd.ErrOrStderr(), f.verbosity)
	}
	solicit := f.redis.solicitInterval
	// Rates cover the print interval, or half of --wait for one look.
	rateWindow := f.interval
	if !f.watch {
		solicit = 0 // one look: the REPLICATE on connect is the one that counts
		rateWindow = f.wait / 2
	}
	return synapse.Config{
		Addr:            f.redis.addr,
		Username:        f.redis.user,
		Password:        password,
		DB:              f.redis.db,
		TLS:             tlsConfig,
		ServerName:      name,
		SolicitInterval: solicit,
		StreamWriters:   writers,
		Logger:          logger,
		// Answers to REPLICATE must have settled before --wait ends, or
		// no writer could be reported missing.
		SettleTime:   min(3*time.Second, f.wait/2),
		RateInterval: min(5*time.Second, max(rateWindow, 100*time.Millisecond)),
		DialTimeout:  min(5*time.Second, f.wait),
	}, nil
}

func runSynapseProbe(cmd *cobra.Command, f *probeFlags, getenv func(string) string) error {
	cfg, err := f.synapseConfig(cmd, getenv)
	if err != nil {
		return err
	}
	w, err := synapse.NewWatcher(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "tcprepl: watcher:", err)
		}
	}()
	out := cmd.OutOrStdout()
	if f.watch {
		return watchSynapse(ctx, out, w, f.output, f.interval)
	}
	return probeSynapseOnce(ctx, out, w, f.output, f.wait)
}

// probeSynapseOnce waits --wait (less when Redis refuses the credentials:
// waiting will not fix that), prints one snapshot and returns its error.
func probeSynapseOnce(ctx context.Context, out io.Writer, w *synapse.Watcher, output string, wait time.Duration) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			break wait
		case <-poll.C:
			if errors.Is(w.Snapshot().Error, synapse.ErrRedisAuth) {
				break wait
			}
		}
	}
	s := w.Snapshot()
	if err := renderSynapse(out, s, output); err != nil {
		return err
	}
	return s.Error
}

// watchSynapse prints a snapshot every interval until interrupted;
// connection problems are shown, not fatal.
func watchSynapse(ctx context.Context, out io.Writer, w *synapse.Watcher, output string, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if output == "table" {
			if _, err := fmt.Fprint(out, "\x1b[H\x1b[2J"); err != nil {
				return fmt.Errorf("write to stdout: %w", err)
			}
		}
		if err := renderSynapse(out, w.Snapshot(), output); err != nil {
			return err
		}
	}
}

func renderSynapse(out io.Writer, s synapse.Snapshot, output string) error {
	if output == "json" {
		return synapse.WriteJSON(out, s)
	}
	return synapse.WriteTable(out, s, time.Now())
}
