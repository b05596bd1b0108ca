package bench

import (
	"os"
	"testing"
	"time"
)

func TestStatParentAndChildrenCPU(t *testing.T) {
	const tail = " S 4242 2 3 4 5 6 7 8 9 10 1234 566 700 33 20 0 12 0 100 200 300"
	tests := map[string]struct {
		stat     string
		parent   int
		ok       bool
		children time.Duration
	}{
		"postgres backend": {stat: "5000 (postgres)" + tail, parent: 4242, ok: true, children: 7330 * time.Millisecond},
		"name with spaces": {stat: "5000 (postgres: walwriter )" + tail, parent: 4242, ok: true, children: 7330 * time.Millisecond},
		"truncated":        {stat: "5000 (postgres) S", parent: 0, ok: false, children: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, ok := statParent(tc.stat)
			if p != tc.parent || ok != tc.ok {
				t.Fatalf("statParent = %d, %v; want %d, %v", p, ok, tc.parent, tc.ok)
			}
			if c := statChildrenCPU(tc.stat); c != tc.children {
				t.Fatalf("statChildrenCPU = %s, want %s", c, tc.children)
			}
		})
	}
}

// TestServerCPUOfThisProcess: this test's process stands in for a
// postmaster; its CPU is counted, a pid of 0 counts nothing.
func TestServerCPUOfThisProcess(t *testing.T) {
	if serverCPU(0) != 0 {
		t.Fatal("serverCPU(0) counted something")
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	if serverCPU(os.Getpid()) <= 0 {
		t.Fatal("serverCPU of this busy process is 0")
	}
}
