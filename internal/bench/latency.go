package bench

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"
)

// latency publishes LatencyRate rows/s, in batches of BatchRows on a fixed
// schedule, and measures each batch from its scheduled publish time to its
// delivery at every subscriber. Timing from the schedule, not from when a
// publisher got to it, keeps a stalled publish from hiding its own delay.
func (t *target) latency(ctx context.Context) (*Latency, error) {
	kind := "http"
	if t.m != nil {
		kind = "in-process"
	}
	pub, err := t.publisher(kind)
	if err != nil {
		return nil, err
	}
	subs, err := t.liveSubscribers(ctx, "bench-latency")
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range subs {
			s.stop()
		}
	}()
	for _, s := range subs {
		s.record.Store(true)
	}
	interval := time.Duration(float64(time.Second) * float64(t.cfg.BatchRows) / float64(t.cfg.LatencyRate))
	batches := int(t.cfg.Duration / interval)
	work := make(chan int64, batches)
	pad := t.rowPad()
	// Enough publishers that a batch is never waiting for a free one while
	// another sits in fsync: each publish takes at least one commit round.
	publishers := max(t.cfg.Publishers, 32)
	var (
		wg    sync.WaitGroup
		errs  = make(chan error, publishers)
		ackMu sync.Mutex
		acks  = make([]time.Duration, 0, batches)
	)
	for range publishers {
		wg.Go(func() {
			var batch []json.RawMessage
			var buf []byte
			for ts := range work {
				batch, buf = appendBatch(batch, buf, pad, 0, t.cfg.BatchRows, ts)
				if _, err := pub(ctx, batch); err != nil {
					errs <- err
					return
				}
				ack := time.Duration(time.Now().UnixNano() - ts)
				ackMu.Lock()
				acks = append(acks, ack)
				ackMu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range batches {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		work <- at.UnixNano()
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	want := int64(batches * t.cfg.BatchRows)
	if err := waitAll(ctx, subs, time.Minute, "latency delivery", func(s *subscriber) bool { return s.rows.Load() >= want }); err != nil {
		return nil, err
	}
	var all []time.Duration
	for _, s := range subs {
		s.mu.Lock()
		all = append(all, s.latency...)
		s.mu.Unlock()
	}
	if len(all) == 0 {
		return nil, errors.New("no latency samples")
	}
	slices.Sort(all)
	slices.Sort(acks)
	return &Latency{
		RateRowsPerSec: t.cfg.LatencyRate, Subscribers: len(subs), Samples: len(all),
		P50: quantile(all, 0.50), P99: quantile(all, 0.99), Max: all[len(all)-1],
		AchievedRate: float64(want) / elapsed.Seconds(),
		AckP50:       quantile(acks, 0.50), AckP99: quantile(acks, 0.99),
	}, nil
}

// quantile of sorted durations; 0 for none.
func quantile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
