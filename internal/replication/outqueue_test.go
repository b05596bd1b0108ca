package replication

import (
	"strings"
	"testing"
	"time"
	"unsafe"
)

func item(n, size int) outItem {
	return outItem{b: []byte(strings.Repeat("x", size-1) + "\n"), n: int32(n), cmd: idRdata}
}

func TestOutQueueAdmits(t *testing.T) {
	lim := queueLimits{cmds: 10, bytes: 1000}
	tests := map[string]struct {
		queued   []outItem
		inFlight bool // the first queued item is taken into flight first
		add      outItem
		want     bool
	}{
		"empty queue takes a batch over both limits": {add: item(10001, 5000), want: true},
		"rows after a big batch at the head":         {queued: []outItem{item(10001, 5000)}, add: item(10, 1000), want: true},
		"within both limits":                         {queued: []outItem{item(1, 1), item(5, 500)}, add: item(5, 500), want: true},
		"over the command limit":                     {queued: []outItem{item(1, 1), item(5, 50)}, add: item(6, 50), want: false},
		"over the byte limit":                        {queued: []outItem{item(1, 1), item(1, 600)}, add: item(1, 401), want: false},
		"a full write in flight does not count":      {queued: []outItem{item(10, 1000), item(1, 1)}, inFlight: true, add: item(9, 999), want: true},
		"queued behind the head counts":              {queued: []outItem{item(10, 1000), item(1, 1), item(5, 500)}, inFlight: true, add: item(6, 500), want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var q outQueue
			for _, it := range tc.queued {
				q.push(it)
			}
			if tc.inFlight {
				q.take(nil, 1, time.Now())
			}
			if got := q.admits(tc.add, lim); got != tc.want {
				t.Fatalf("admits = %v, want %v (queued %d cmds %d bytes)", got, tc.want, q.queuedCmds, q.queuedBytes)
			}
		})
	}
}

func TestOutQueueCatchUpRoom(t *testing.T) {
	lim := queueLimits{cmds: 100, bytes: 1000}
	tests := map[string]struct {
		queued []outItem
		want   bool
	}{
		"empty":                       {want: true},
		"half of each":                {queued: []outItem{item(50, 500)}, want: true},
		"over half the commands":      {queued: []outItem{item(51, 10)}, want: false},
		"over half the bytes":         {queued: []outItem{item(1, 501)}, want: false},
		"one item over both, nothing": {queued: []outItem{item(1000, 5000)}, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var q outQueue
			for _, it := range tc.queued {
				q.push(it)
			}
			if got := q.hasRoomForCatchUp(lim); got != tc.want {
				t.Fatalf("hasRoomForCatchUp = %v, want %v", got, tc.want)
			}
			// Moving the items into flight changes nothing: in flight
			// is still pending for catch-up.
			q.take(nil, 1<<30, time.Now())
			if got := q.hasRoomForCatchUp(lim); got != tc.want {
				t.Fatalf("in flight: hasRoomForCatchUp = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOutQueueTakeAndWritten(t *testing.T) {
	var q outQueue
	for _, size := range []int{300, 300, 300, 50} {
		q.push(item(1, size))
	}
	start := time.Unix(100, 0)
	batch := q.take(nil, 700, start)
	if len(batch) != 2 || q.flightCmds != 2 || q.flightBytes != 600 || q.queuedCmds != 2 || q.queuedBytes != 350 {
		t.Fatalf("took %d items; flight %d/%d queued %d/%d", len(batch), q.flightCmds, q.flightBytes, q.queuedCmds, q.queuedBytes)
	}
	if cmds, bytes := q.pending(); cmds != 4 || bytes != 950 {
		t.Fatalf("pending %d/%d", cmds, bytes)
	}
	if d := q.flushingFor(start.Add(time.Second)); d != time.Second {
		t.Fatalf("flushing for %v", d)
	}
	q.written()
	if cmds, bytes := q.pending(); cmds != 2 || bytes != 350 || q.flushingFor(start.Add(time.Hour)) != 0 {
		t.Fatalf("after the write: pending %d/%d", cmds, bytes)
	}
	// One item larger than the flush size is still taken, alone.
	q.push(item(1, 5000))
	q.written()
	if batch := q.take(nil, 100, start); len(batch) != 1 {
		t.Fatalf("took %d items, want the first alone", len(batch))
	}
	if q.peakQueuedBytes != 5350 {
		t.Fatalf("peak queued bytes %d", q.peakQueuedBytes)
	}
}

func TestOutQueueDropReleasesBudget(t *testing.T) {
	pc, _, _ := newTestPageCache(t, 30, 1<<20)
	q := outQueue{pages: pc}
	var held int64
	for i := range 3 {
		p, err := pc.get(t.Context(), "caches", int64(i*10), 30, 10)
		if err != nil {
			t.Fatal(err)
		}
		held += int64(cap(p.b))
		q.push(outItem{b: p.b, n: p.lines, cmd: idRdata, paged: true})
	}
	q.push(item(1, 10)) // a live row holds no budget
	if used, _ := pc.budget.inUse(); used != held {
		t.Fatalf("in use %d, want %d", used, held)
	}
	q.dropQueued()
	if used, _ := pc.budget.inUse(); used != 0 {
		t.Fatalf("after drop: in use %d", used)
	}
	if cmds, bytes := q.pending(); cmds != 0 || bytes != 0 {
		t.Fatalf("pending %d/%d", cmds, bytes)
	}
}

// TestOutItemIsSmall: items are copied several times per delivered update
// (queue, batch, clear); keep them at four words.
func TestOutItemIsSmall(t *testing.T) {
	if size := unsafe.Sizeof(outItem{}); size > 32 {
		t.Fatalf("outItem is %d bytes, want at most 32", size)
	}
}
