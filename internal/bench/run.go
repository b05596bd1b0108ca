package bench

import (
	"context"
	"fmt"
)

// Run runs every phase in order and returns what it measured.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t, err := start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res := &Results{Mode: cfg.Mode, Subscribers: cfg.SubscriberKind}
	if cfg.Mode != External {
		res.Log = cfg.Log
	}
	runErr := t.run(ctx, res)
	stopErr := t.shutdown()
	if runErr != nil {
		return res, runErr
	}
	return res, stopErr
}

func (t *target) run(ctx context.Context, res *Results) error {
	logf := t.cfg.Logf
	if t.cfg.runs(PhaseIdle) {
		// Idle memory first, while the master is small and quiet.
		logf("idle connections: opening %d", t.cfg.IdleConns)
		per, method, err := t.idleConnBytes(ctx)
		if err != nil {
			return fmt.Errorf("idle connection phase: %w", err)
		}
		res.BytesPerIdleConn, res.IdleConnMethod = per, method
		logf("idle connections: %.0f bytes each (%s)", per, method)
	}
	for _, n := range []int{1, 10} {
		if !t.cfg.runs(PhaseCatchUp) {
			break
		}
		logf("catch-up: %d rows to %d subscriber(s)", t.cfg.CatchUpRows, n)
		cu, err := t.catchUp(ctx, n)
		if err != nil {
			return fmt.Errorf("catch-up phase: %w", err)
		}
		res.CatchUp = append(res.CatchUp, cu)
		logf("catch-up: %d subscriber(s): %.0f rows/s", n, cu.RowsPerSec)
	}
	var publishers []string
	if t.m != nil && t.cfg.runs(PhasePublishInProcess) {
		publishers = append(publishers, "in-process")
	}
	if t.cfg.runs(PhasePublishHTTP) {
		publishers = append(publishers, "http")
	}
	for _, p := range publishers {
		logf("publish: %s, %d publishers, batches of %d, %d subscribers, %s", p, t.cfg.Publishers, t.cfg.BatchRows, t.cfg.Subscribers, t.cfg.Duration)
		tp, err := t.throughput(ctx, p)
		if err != nil {
			return fmt.Errorf("%s publish phase: %w", p, err)
		}
		res.Throughput = append(res.Throughput, tp)
		logf("publish: %s: %.0f rows/s durable, %.0f rows/s delivered", p, tp.PublishRowsPerSec, tp.DeliveredRowsPerSec)
	}
	if t.cfg.runs(PhaseLatency) {
		logf("latency: %d rows/s to %d subscribers for %s", t.cfg.LatencyRate, t.cfg.Subscribers, t.cfg.Duration)
		lat, err := t.latency(ctx)
		if err != nil {
			return fmt.Errorf("latency phase: %w", err)
		}
		res.Latency = lat
		logf("latency: p50 %s p99 %s max %s", lat.P50, lat.P99, lat.Max)
	}
	res.PeakRSSBytes, res.PeakRSSOf = t.peakRSS()
	return nil
}
