package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/testenv"
)

// RequireEnv names the environment variable that turns a missing binary from
// a skip into a failure. `make test-e2e` sets it, so a broken tool build
// cannot pass silently.
const RequireEnv = "TCPREPL_E2E_REQUIRED"

// SkipOrFail skips the test when err says a binary is missing, unless
// TCPREPL_E2E_REQUIRED is set or the run is CI's (testenv.SkipOrFail); any
// other error fails it.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrBinaryNotFound) && os.Getenv(RequireEnv) == "" {
		testenv.SkipOrFail(t, fmt.Sprintf("skipping: %v (set %s=1 to make this a failure)", err, RequireEnv))
	}
	t.Fatal(err)
}

// StartForTest starts a cluster for t from the binaries BinariesFromEnv
// finds, skipping under -short or when they are missing. The cluster is
// stopped when the test ends; if the test failed, the components' log tails
// are logged first.
func StartForTest(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: starts a real control plane (not in -short)")
	}
	bins, err := BinariesFromEnv("")
	SkipOrFail(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, Options{Binaries: bins, KeepDir: os.Getenv("TCPREPL_KEEP_CLUSTER") != ""})
	if err != nil {
		t.Fatalf("start test cluster: %v", err)
	}
	t.Logf("control plane up in %s at %s (dir %s)", time.Since(start).Round(time.Millisecond), c.Server, c.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane logs:%s", c.LogTails(40))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop test cluster: %v", err)
		}
	})
	return c
}
