// Command startup measures how long tcprepl takes from process start to a
// 200 from /readyz, for the master and the operator, with the binary that
// goes into the image (`make image` leaves it in bin/image). The operator
// needs an API server: a local control plane from the binaries `make
// tools` builds (test/cluster), with the CRDs applied.
//
//	go run ./hack/startup --binary bin/image/tcprepl-linux-amd64 --runs 10
//
// docs/benchmarks.md keeps the results.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tcprepl/tcprepl/test/cluster"
)

func main() {
	binary := flag.String("binary", "bin/image/tcprepl-linux-amd64", "the tcprepl binary (the image's)")
	runs := flag.Int("runs", 10, "starts per role")
	roles := flag.String("roles", "master,operator", "comma-separated: master, operator")
	flag.Parse()
	if err := run(*binary, *runs, strings.Split(*roles, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "startup:", err)
		os.Exit(1)
	}
}

func run(binary string, runs int, roles []string) error {
	bin, err := filepath.Abs(binary)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run `make image`)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, role := range roles {
		var start func(ctx context.Context, dir string) (time.Duration, error)
		switch role {
		case "master":
			start = func(ctx context.Context, dir string) (time.Duration, error) {
				return timeToReady(ctx, bin, "http", "master serving", "master", "--server-name=bench.example.org",
					"--data-dir="+filepath.Join(dir, "data"), "--http-listen=127.0.0.1:0", "--replication-listen=127.0.0.1:0")
			}
		case "operator":
			c, err := startCluster(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = c.Stop() }()
			start = func(ctx context.Context, _ string) (time.Duration, error) {
				return timeToReady(ctx, bin, "addr", "health probe", "operator", "--kubeconfig="+c.Kubeconfig,
					"--health-probe-bind-address=127.0.0.1:0", "--metrics-bind-address=0", "--image=ghcr.io/tcprepl/tcprepl:bench")
			}
		default:
			return fmt.Errorf("unknown role %q (master, operator)", role)
		}
		var ds []time.Duration
		for i := range runs {
			dir, err := os.MkdirTemp("", "tcprepl-startup-")
			if err != nil {
				return err
			}
			d, err := start(ctx, dir)
			_ = os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", role, i+1, err)
			}
			ds = append(ds, d)
		}
		slices.Sort(ds)
		fmt.Printf("%-9s runs=%d min=%s median=%s max=%s\n", role, len(ds),
			ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	return nil
}

func startCluster(ctx context.Context) (*cluster.Cluster, error) {
	bins, err := cluster.BinariesFromEnv("")
	if err != nil {
		return nil, err
	}
	if bins.Kubectl == "" {
		return nil, errors.New("kubectl not found (run `make tools`)")
	}
	c, err := cluster.Start(ctx, cluster.Options{Binaries: bins})
	if err != nil {
		return nil, err
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		_ = c.Stop()
		return nil, err
	}
	out, err := exec.CommandContext(ctx, bins.Kubectl, "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "-f", filepath.Join(root, "config", "crd", "bases")).CombinedOutput()
	if err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("apply the CRDs: %w: %s", err, out)
	}
	out, err = exec.CommandContext(ctx, bins.Kubectl, "--kubeconfig", c.Kubeconfig, "wait", "--for=condition=established", "--timeout=60s", "crd", "--all").CombinedOutput()
	if err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("wait for the CRDs: %w: %s", err, out)
	}
	return c, nil
}

// timeToReady starts bin with args, reads the health address from the JSON
// log line with a field containing logMsg (field addrKey; the process binds
// port 0 and says which port it got), polls /readyz there every 2ms, and
// returns the time from just before the start to the first 200. The
// process is stopped with SIGTERM afterwards.
func timeToReady(ctx context.Context, bin, addrKey, logMsg string, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
		close(exited)
	}()
	defer func() {
		cancel()
		<-exited
	}()
	addrc := make(chan string, 1)
	var mu sync.Mutex
	var tail []string
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() { // drained until the process exits
			mu.Lock()
			tail = append(tail, sc.Text())
			if len(tail) > 10 {
				tail = tail[1:]
			}
			mu.Unlock()
			var line map[string]any
			if sent || json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			a, ok := line[addrKey].(string)
			if !ok {
				continue
			}
			for _, v := range line {
				if s, _ := v.(string); !sent && strings.Contains(s, logMsg) {
					addrc <- a
					sent = true
				}
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-exited:
		mu.Lock()
		defer mu.Unlock()
		return 0, fmt.Errorf("exited before it served: %s", strings.Join(tail, "\n"))
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		return 0, fmt.Errorf("no %q log line with the health address: %w; last output:\n%s", logMsg, ctx.Err(), strings.Join(tail, "\n"))
	}
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(began), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("/readyz at %s never answered 200: %w", addr, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}
