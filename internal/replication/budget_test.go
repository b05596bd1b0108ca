package replication

import (
	"context"
	"errors"
	"testing"
)

func TestByteBudget(t *testing.T) {
	b := newByteBudget(100)
	// Unused, it grants a request over the limit, so a huge page progresses.
	if err := b.acquire(t.Context(), 250); err != nil {
		t.Fatal(err)
	}
	// Now a request waits until bytes are released.
	got := make(chan error, 1)
	go func() { got <- b.acquire(context.Background(), 60) }()
	b.adjust(-200) // the page was smaller than granted: 50 in use, 110 would not fit
	select {
	case err := <-got:
		t.Fatalf("acquire of 60 with 50 of 100 in use returned %v", err)
	default:
	}
	b.release(10) // 40 in use: 60 fits
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if used, peak := b.inUse(); used != 100 || peak != 250 {
		t.Fatalf("in use %d, peak %d", used, peak)
	}
	// A cancelled wait returns the context's error and takes nothing.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.acquire(ctx, 50); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire with a cancelled context: %v", err)
	}
	b.adjust(10)
	b.release(110)
	if used, _ := b.inUse(); used != 0 {
		t.Fatalf("in use %d after releasing everything", used)
	}
}
