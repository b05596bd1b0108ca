package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeComponentEnv makes the test binary act as a control-plane component
// that is given its port: see runFakeComponent.
const fakeComponentEnv = "TCPREPL_CLUSTER_FAKE_COMPONENT"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeComponentEnv); mode != "" {
		os.Exit(runFakeComponent(mode, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// runFakeComponent serves /health on 127.0.0.1:port. Mode "lose-once"
// first exits as a component does when its port was taken (the first run
// leaves a marker file beside its log); mode "crash" always exits with an
// unrelated error.
func runFakeComponent(mode, port string) int {
	marker := filepath.Join(".", "lost-once")
	switch mode {
	case "crash":
		fmt.Println("error: cannot read the certificate")
		return 1
	case "lose-once":
		if _, err := os.Stat(marker); err != nil {
			_ = os.WriteFile(marker, nil, 0o644)
			fmt.Printf("listen tcp 127.0.0.1:%s: bind: address already in use\n", port)
			return 1
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(http.ResponseWriter, *http.Request) {})
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	_ = http.Serve(ln, mux)
	return 0
}

// TestStartOnFreePortsRetriesALostBind: a component that exits because
// its port was taken is started again on a new port; one that fails for
// another reason is not.
func TestStartOnFreePortsRetriesALostBind(t *testing.T) {
	tests := map[string]struct {
		mode      string
		wantStart bool
		wantRuns  int
	}{
		"lost the port once": {mode: "lose-once", wantStart: true, wantRuns: 2},
		"crashed":            {mode: "crash", wantStart: false, wantRuns: 1},
		"healthy":            {mode: "serve", wantStart: true, wantRuns: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv(fakeComponentEnv, tc.mode)
			c := &Cluster{Dir: t.TempDir(), logs: map[string]string{}}
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Errorf("stop: %v", err)
				}
			})
			runs := 0
			ctx := context.Background()
			ports, err := c.startOnFreePorts(ctx, "fake", os.Args[0], 1, func(ports []int) []string {
				runs++
				return []string{"-test.run=^$", strconv.Itoa(ports[0])}
			}, func(ports []int) error {
				return waitHTTP(ctx, 30*time.Second, "http://127.0.0.1:"+strconv.Itoa(ports[0])+"/health", nil, c.exited("fake"))
			})
			if runs != tc.wantRuns {
				t.Fatalf("started %d times, want %d", runs, tc.wantRuns)
			}
			if !tc.wantStart {
				if err == nil || !strings.Contains(err.Error(), "exited") {
					t.Fatalf("err = %v, want the exit reported", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("startOnFreePorts: %v", err)
			}
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(ports[0]) + "/health")
			if err != nil {
				t.Fatalf("the component does not answer on the port returned: %v", err)
			}
			_ = resp.Body.Close()
			c.mu.Lock()
			procs := len(c.procs)
			c.mu.Unlock()
			if procs != 1 {
				t.Fatalf("%d processes tracked, want the one running", procs)
			}
		})
	}
	if _, err := os.Stat("lost-once"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker left in the package directory: %v", err)
	}
}
