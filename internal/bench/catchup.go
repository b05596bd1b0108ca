package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// fill publishes n rows in large batches, as fast as the master takes them.
func (t *target) fill(ctx context.Context, n int) (int64, error) {
	kind := "http"
	if t.m != nil {
		kind = "in-process"
	}
	pub, err := t.publisher(kind)
	if err != nil {
		return 0, err
	}
	const batch = 1000
	pad := t.rowPad()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		last atomic.Int64
		errs = make(chan error, t.cfg.Publishers)
	)
	for range t.cfg.Publishers {
		wg.Go(func() {
			var rows []json.RawMessage
			var buf []byte
			for {
				seq := next.Add(batch) - batch
				if seq >= int64(n) {
					return
				}
				rows, buf = appendBatch(rows, buf, pad, seq, int(min(batch, int64(n)-seq)), time.Now().UnixNano())
				tok, err := pub(ctx, rows)
				if err != nil {
					errs <- err
					return
				}
				for {
					l := last.Load()
					if tok <= l || last.CompareAndSwap(l, tok) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return last.Load(), nil
}

// catchUp fills the log with CatchUpRows rows, then times n subscribers
// that start from before them and read them all.
func (t *target) catchUp(ctx context.Context, n int) (CatchUp, error) {
	from, err := t.currentToken(ctx)
	if err != nil {
		return CatchUp{}, err
	}
	upTo, err := t.fill(ctx, t.cfg.CatchUpRows)
	if err != nil {
		return CatchUp{}, err
	}
	runtime.GC()
	subs := make([]*subscriber, n)
	start := time.Now()
	mark := t.cpuMark()
	for i := range subs {
		if subs[i], err = t.subscribe(ctx, fmt.Sprintf("bench-catchup-%d", i), from, false); err != nil {
			return CatchUp{}, err
		}
	}
	defer func() {
		for _, s := range subs {
			s.stop()
		}
	}()
	if err := waitAll(ctx, subs, 10*time.Minute, "catch-up", func(s *subscriber) bool { return s.lastTok.Load() >= upTo }); err != nil {
		return CatchUp{}, err
	}
	secs := time.Since(start).Seconds()
	var rows int64
	for _, s := range subs {
		rows += s.rows.Load()
	}
	return CatchUp{Subscribers: n, RowsEach: rows / int64(n), Seconds: secs, RowsPerSec: float64(rows) / secs,
		CPU: t.cpuSince(mark, start, 0, rows)}, nil
}
