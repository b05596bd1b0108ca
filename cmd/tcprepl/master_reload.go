package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/master"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// The master re-reads its config file when the file's content changes
// (checked every --config-check-interval: a ConfigMap volume is updated in
// place, eventually) and on SIGHUP, and applies the settings that can
// change live (masterapi.ClassOf); a change to any other is logged and
// exported as pending until the next restart. The operator rolls the pod
// only for those (controllers/specs ConfigHash).

const configCheckIntervalFlag = "config-check-interval"

// addReloadFlags registers the reload flags on the master command.
func addReloadFlags(cmd *cobra.Command) {
	cmd.Flags().Duration(configCheckIntervalFlag, 5*time.Second,
		"how often to check --config for changes and apply the settings that can change live (0: only on SIGHUP)")
}

// configReloader watches one master's config file.
type configReloader struct {
	path     string
	interval time.Duration
	// load reads the file and merges the command line, as at start.
	load   func() (masterapi.Config, error)
	logger logr.Logger
	// hup receives SIGHUP from the start of the process, so that one sent
	// before the master is up does not kill it (the default action).
	hup      chan os.Signal
	lastHash [sha256.Size]byte
}

type reloaderKey struct{}

// withConfigReload prepares reloading for the master the command runs:
// it takes SIGHUP over at once and notes the file's content as started
// with. watchConfig starts the watching once the master is built.
func withConfigReload(ctx context.Context, cmd *cobra.Command, f *masterFlags, logger logr.Logger) context.Context {
	interval, err := cmd.Flags().GetDuration(configCheckIntervalFlag)
	if err != nil || interval < 0 {
		interval = 0
	}
	r := &configReloader{
		path:     f.configFile,
		interval: interval,
		load:     func() (masterapi.Config, error) { return f.config(cmd) },
		logger:   logger.WithName("config"),
		hup:      make(chan os.Signal, 1),
	}
	// Kept for the life of the process: a master rebuilt after a standby
	// wait must not be killed by a SIGHUP either.
	signal.Notify(r.hup, syscall.SIGHUP)
	r.lastHash, _ = r.fileHash()
	return context.WithValue(ctx, reloaderKey{}, r)
}

// watchConfig reloads m's config until ctx is done or the returned stop is
// called. Without withConfigReload on ctx it does nothing.
func watchConfig(ctx context.Context, m *master.Master) (stop func()) {
	r, ok := ctx.Value(reloaderKey{}).(*configReloader)
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.run(ctx, m) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// fileHash digests the config file's content.
func (r *configReloader) fileHash() ([sha256.Size]byte, error) {
	b, err := os.ReadFile(r.path)
	if err != nil {
		return sha256.Sum256([]byte("error: " + err.Error())), fmt.Errorf("read config file: %w", err)
	}
	return sha256.Sum256(b), nil
}

func (r *configReloader) run(ctx context.Context, m *master.Master) {
	var tick <-chan time.Time
	if r.path != "" && r.interval > 0 {
		t := time.NewTicker(r.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.hup:
			if r.path == "" {
				r.logger.Info("SIGHUP: no --config file to reload; settings come from flags only")
				continue
			}
			r.logger.Info("SIGHUP: reloading the config file", "file", r.path)
			r.lastHash, _ = r.fileHash()
			r.reload(m)
		case <-tick:
			h, err := r.fileHash()
			if bytes.Equal(h[:], r.lastHash[:]) {
				continue
			}
			r.lastHash = h
			if err != nil {
				// Counted once per distinct failure, not every interval.
				m.RecordInvalidReload(err)
				continue
			}
			r.logger.Info("config file changed; reloading", "file", r.path)
			r.reload(m)
		}
	}
}

// reload reads the config as at start and applies it.
func (r *configReloader) reload(m *master.Master) {
	cfg, err := r.load()
	if err != nil {
		m.RecordInvalidReload(err)
		return
	}
	// ApplyLive logs what it applied or refused and what awaits a restart.
	_, _ = m.ApplyLive(cfg)
}

// latestConfig is running with the live settings of the config file as it
// is now, so a master that becomes active again after a standby wait starts
// with the settings reloaded meanwhile rather than those it was started
// with. Without a reloader, or when the file cannot be read, it is running.
func latestConfig(ctx context.Context, running masterapi.Config) masterapi.Config {
	r, ok := ctx.Value(reloaderKey{}).(*configReloader)
	if !ok || r.path == "" {
		return running
	}
	updated, err := r.load()
	if err != nil {
		r.logger.Error(err, "config file unreadable; the next role keeps the settings it had")
		return running
	}
	return masterapi.WithLive(running, updated)
}
