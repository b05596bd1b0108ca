package replication

import (
	"strings"
	"testing"
)

// TestScratchFor: a flush that blocks on a peer reading nothing holds its
// coalescing buffer until the write timeout, so a batch of large items (or
// a few small lines among them) must not take a 256 KiB one.
func TestScratchFor(t *testing.T) {
	line := func(n int) outItem { return outItem{b: []byte(strings.Repeat("x", n-1) + "\n"), n: 1} }
	page := line(1 << 20)
	tests := map[string]struct {
		items []outItem
		size  int // the capacity of the wanted pool's buffers
	}{
		"catch-up pages only":      {items: []outItem{page, page}, size: smallScratchSize},
		"16 KB rows":               {items: []outItem{line(16 << 10), line(16 << 10), line(16 << 10)}, size: smallScratchSize},
		"a PING among pages":       {items: []outItem{line(20), page}, size: smallScratchSize},
		"small lines up to 4 KiB":  {items: []outItem{line(2 << 10), line(2 << 10)}, size: smallScratchSize},
		"small lines over 4 KiB":   {items: []outItem{line(2 << 10), line(2 << 10), line(1)}, size: scratchSize},
		"many live rows of 100 B":  {items: repeatItem(line(100), 41), size: scratchSize},
		"large items do not count": {items: []outItem{line(coalesceItemMax + 1), line(coalesceItemMax + 1), line(10)}, size: smallScratchSize},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pool := scratchFor(tc.items)
			buf := pool.Get().(*[]byte)
			defer pool.Put(buf)
			if cap(*buf) != tc.size {
				t.Fatalf("scratch of %d bytes, want %d", cap(*buf), tc.size)
			}
			// Whatever the pool, the small items fit: coalescing copies
			// them all into one run.
			var small int
			for _, it := range tc.items {
				if len(it.b) <= coalesceItemMax {
					small += len(it.b)
				}
			}
			if small > cap(*buf) {
				t.Fatalf("%d bytes of small items do not fit the %d-byte scratch", small, cap(*buf))
			}
		})
	}
}

func repeatItem(it outItem, n int) []outItem {
	out := make([]outItem, n)
	for i := range out {
		out[i] = it
	}
	return out
}
