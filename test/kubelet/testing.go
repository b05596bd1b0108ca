package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RunForTest runs a kubelet until the test ends. Its log lines go to t.Log;
// when the test failed, the tail of every container log is logged too.
// Cleanup waits for every pod process to be gone.
func RunForTest(t testing.TB, opts Options) *Kubelet {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = func(format string, args ...any) { t.Logf("kubelet: "+format, args...) }
	}
	k, err := New(opts)
	if err != nil {
		t.Fatalf("create test kubelet: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- k.Run(ctx) }()
	t.Cleanup(func() {
		if t.Failed() {
			k.logContainerTails(t)
		}
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("test kubelet: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("test kubelet did not stop within 60s")
		}
	})
	return k
}

func (k *Kubelet) logContainerTails(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(k.opts.Dir, "pods", "*", "*.log"))
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		rel, _ := filepath.Rel(k.opts.Dir, p)
		t.Logf("--- container log %s (last %d lines):\n%s", rel, len(lines), strings.Join(lines, "\n"))
	}
}
