package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// liveSubscribers connects Subscribers clients from now on and waits until
// each has caught up.
func (t *target) liveSubscribers(ctx context.Context, name string) ([]*subscriber, error) {
	subs := make([]*subscriber, t.cfg.Subscribers)
	for i := range subs {
		var err error
		if subs[i], err = t.subscribe(ctx, fmt.Sprintf("%s-%d", name, i), 0, true); err != nil {
			return nil, err
		}
	}
	if err := waitAll(ctx, subs, time.Minute, "subscribers connecting", func(s *subscriber) bool { return s.caught.Load() }); err != nil {
		return nil, err
	}
	return subs, nil
}

// throughput publishes as fast as Publishers can for Duration, with live
// subscribers, and measures durable and delivered rates.
func (t *target) throughput(ctx context.Context, kind string) (Throughput, error) {
	pub, err := t.publisher(kind)
	if err != nil {
		return Throughput{}, err
	}
	subs, err := t.liveSubscribers(ctx, "bench-live")
	if err != nil {
		return Throughput{}, err
	}
	defer func() {
		for _, s := range subs {
			s.stop()
		}
	}()
	pad := t.rowPad()
	var (
		wg      sync.WaitGroup
		rows    atomic.Int64
		lastTok atomic.Int64
		errs    = make(chan error, t.cfg.Publishers)
		seq     atomic.Int64
		// inFlight counts publishes sent and not yet acknowledged; the
		// window covers them too, or many publishers passing the check at
		// once would overshoot it.
		inFlight atomic.Int64
	)
	// Publishers stay within a window of tokens of the slowest subscriber,
	// so the phase measures the rate every subscriber keeps pace with. An
	// unpaced in-process publisher otherwise outruns subscribers that share
	// its CPUs and they are closed as slow consumers, which is the server's
	// limit working, not a throughput figure. The window (8,000 commands
	// by default, counting publishes in flight) stays below the server's
	// slow-consumer limit by construction; half of it starved 32
	// publishers over HTTP of work.
	window := int64(max(1, replication.DefaultMaxPendingCommands*8/10/t.cfg.BatchRows))
	slowestSeen := func() int64 {
		m := subs[0].lastTok.Load()
		for _, s := range subs[1:] {
			m = min(m, s.lastTok.Load())
		}
		return m
	}
	start := time.Now()
	mark := t.cpuMark()
	stopAt := start.Add(t.cfg.Duration)
	for range t.cfg.Publishers {
		wg.Go(func() {
			var batch []json.RawMessage
			var buf []byte
			for time.Now().Before(stopAt) {
				if lastTok.Load()+inFlight.Add(1)-slowestSeen() > window {
					inFlight.Add(-1)
					if ctx.Err() != nil {
						break
					}
					time.Sleep(50 * time.Microsecond)
					continue
				}
				s := seq.Add(int64(t.cfg.BatchRows)) - int64(t.cfg.BatchRows)
				batch, buf = appendBatch(batch, buf, pad, s, t.cfg.BatchRows, time.Now().UnixNano())
				tok, err := pub(ctx, batch)
				if err != nil {
					inFlight.Add(-1)
					errs <- err
					return
				}
				rows.Add(int64(len(batch)))
				for {
					l := lastTok.Load()
					if tok <= l || lastTok.CompareAndSwap(l, tok) {
						break
					}
				}
				// Only now: the other order let others see the publish
				// neither in flight nor acknowledged, and overshoot.
				inFlight.Add(-1)
			}
		})
	}
	wg.Wait()
	pubSecs := time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return Throughput{}, err
	}
	published := rows.Load()
	if err := waitAll(ctx, subs, 5*time.Minute, "delivery", func(s *subscriber) bool { return s.rows.Load() >= published }); err != nil {
		return Throughput{}, err
	}
	var lastAt int64
	slowest := 0.0
	for i, s := range subs {
		lastAt = max(lastAt, s.lastAt.Load())
		rate := float64(s.rows.Load()) / time.Duration(s.lastAt.Load()-start.UnixNano()).Seconds()
		if i == 0 || rate < slowest {
			slowest = rate
		}
	}
	deliverSecs := time.Duration(lastAt - start.UnixNano()).Seconds()
	return Throughput{
		Publisher: kind, Rows: published, Seconds: pubSecs, Subscribers: len(subs),
		PublishRowsPerSec:           float64(published) / pubSecs,
		DeliveredRowsPerSec:         float64(published*int64(len(subs))) / deliverSecs,
		SlowestSubscriberRowsPerSec: slowest,
		DrainSeconds:                max(0, deliverSecs-pubSecs),
		CPU:                         t.cpuSince(mark, start, published, published*int64(len(subs))),
	}, nil
}
