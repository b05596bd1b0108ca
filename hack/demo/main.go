// Command demo is `make demo`: it starts a local Kubernetes control plane
// from real parts (etcd, kube-apiserver, kube-controller-manager) with the
// project's test kubelet, installs the chart with helm, runs the operator,
// applies the sample master and workers, publishes rows, and prints what
// `kubectl get` and `tcprepl probe` show; then a SynapseReplication watches
// a Synapse deployment emulated on a local redis-server and reports its
// missing writer; last `kubectl tcprepl status` of the master. Everything is removed on exit, including on Ctrl-C.
//
//	go run ./hack/demo [--rows 50] [--keep]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/harness"
)

const (
	operatorNS = "tcprepl-system"
	release    = "tcprepl"
	ns         = "demo"
	stream     = "audit_log"
	worker     = "synapse-all"
)

func main() {
	rows := flag.Int("rows", 50, "batches of 2 rows to publish")
	keep := flag.Bool("keep", false, "keep the cluster running until Ctrl-C (prints a KUBECONFIG to use)")
	verbose := flag.Bool("v", false, "print the test kubelet's log lines")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *rows, *keep, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, rows int, keep, verbose bool) (err error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return err
	}
	tools, err := harness.FindTools(root)
	if err != nil {
		return fmt.Errorf("%w\nrun `make demo`, which builds them", err)
	}
	began := time.Now()
	step("starting a local control plane (etcd, kube-apiserver, kube-controller-manager) and the test kubelet")
	logf := func(f string, a ...any) {
		if verbose || !strings.HasPrefix(f, "kubelet: ") {
			fmt.Printf("    "+f+"\n", a...)
		}
	}
	env, err := harness.Start(ctx, harness.Options{RepoRoot: root, Tools: tools, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		step("cleaning up: operator, pods, control plane, temp dirs")
		if serr := env.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	kubectl := func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		out, err := env.Kubectl(ctx, args...)
		fmt.Print(out)
		return err
	}

	step("helm install %s charts/tcprepl --namespace %s --set image.repository=... --set image.tag=... (CRDs, RBAC, the operator Deployment; every pod runs from %s)", release, operatorNS, tools.Image)
	// Statuses every second instead of the default, so the demo shows
	// positions without waiting.
	if err := env.InstallChart(ctx, release, operatorNS, "operator.replicas=1",
		"operator.statusInterval=1s", "operator.heartbeatInterval=1s"); err != nil {
		return err
	}
	if err := env.UseChartOperator(ctx, release, operatorNS); err != nil {
		return err
	}
	if err := kubectl("get", "deployments,pods", "--namespace", operatorNS, "-o", "wide"); err != nil {
		return err
	}
	if err := kubectl("create", "namespace", ns); err != nil {
		return err
	}
	if err := waitFor(ctx, time.Minute, func() error {
		_, err := env.Kubectl(ctx, "get", "serviceaccount", "default", "--namespace", ns)
		return err
	}); err != nil {
		return fmt.Errorf("namespace %s not ready: %w", ns, err)
	}

	step("kubectl apply a master and a 2-replica worker from config/samples")
	samples := filepath.Join(root, "config", "samples")
	master, ports, err := env.ApplyMaster(ctx, ns, filepath.Join(samples, "replication_v1alpha1_replicationmaster.yaml"))
	if err != nil {
		return err
	}
	if err := env.Apply(ctx, ns, filepath.Join(samples, "replication_v1alpha1_replicationworker_all.yaml")); err != nil {
		return err
	}
	fmt.Println("    waiting for the master to be Ready ...")
	if err := waitFor(ctx, 3*time.Minute, func() error {
		out, err := env.Kubectl(ctx, "get", "rmaster", master, "--namespace", ns, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("master not ready: %w\noperator log (tail):\n%s", err, env.OperatorLogTail(20))
	}

	step("publishing %d batches of 2 rows to stream %s through the master's Service", rows, stream)
	var last int64
	for i := range rows {
		last, err = env.Publish(ctx, ns, master, ports, stream, []any{[]any{"demo", i, "a"}, []any{"demo", i, "b"}})
		if err != nil {
			return err
		}
	}
	fmt.Printf("    last token: %d\n", last)
	fmt.Println("    waiting for the workers to report it ...")
	if err := waitFor(ctx, 2*time.Minute, func() error {
		out, err := env.Kubectl(ctx, "get", "rworker", worker, "--namespace", ns, "-o", "jsonpath={.status.pods[*].streams[?(@.name==\""+stream+"\")].token}")
		if err != nil {
			return err
		}
		toks := strings.Fields(out)
		if len(toks) < 2 {
			return fmt.Errorf("positions %q", out)
		}
		for _, tk := range toks {
			if tk != strconv.FormatInt(last, 10) {
				return fmt.Errorf("positions %q", out)
			}
		}
		return nil
	}); err != nil {
		fmt.Printf("    (workers not caught up yet: %v)\n", err)
	}

	step("what a user sees")
	if err := kubectl("get", "rmaster,rworker", "--namespace", ns, "-o", "wide"); err != nil {
		return err
	}
	if err := kubectl("get", "statefulsets,deployments,pods,services", "--namespace", ns, "-o", "wide"); err != nil {
		return err
	}
	if err := kubectl("get", "rworker", worker, "--namespace", ns, "-o", "jsonpath={range .status.pods[*]}{.name}{\"  connected=\"}{.connected}{\"  \"}{range .streams[?(@.name==\""+stream+"\")]}{.name}{\" token=\"}{.token}{\" behind=\"}{.tokensBehind}{\" (\"}{.secondsBehind}{\"s)\"}{end}{\"\\n\"}{end}"); err != nil {
		return err
	}

	ip, err := env.Kubelet.ServiceIP(ns, master)
	if err != nil {
		return err
	}
	serverName, err := env.Kubectl(ctx, "get", "rmaster", master, "--namespace", ns, "-o", "jsonpath={.spec.serverName}")
	if err != nil {
		return err
	}
	replAddr := net.JoinHostPort(ip, strconv.Itoa(ports.Replication))
	httpURL := "http://" + net.JoinHostPort(ip, strconv.Itoa(ports.HTTP))
	probeArgs := []string{"probe", "--master", replAddr, "--server-name", strings.TrimSpace(serverName), "--http", httpURL}
	step("tcprepl %s", strings.Join(probeArgs, " "))
	out, err := env.Run(ctx, 30*time.Second, tools.Tcprepl, probeArgs...)
	fmt.Print(out)
	if err != nil {
		return err
	}

	stopRedis, err := synapseDemo(ctx, env, kubectl)
	defer func() {
		if serr := stopRedis(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if err != nil {
		return err
	}

	if err := pluginStatus(ctx, env, master); err != nil {
		return err
	}

	fmt.Printf("\ndemo ran in %s\n", time.Since(began).Round(time.Second))
	if keep {
		step("the cluster keeps running until Ctrl-C; in another terminal:")
		fmt.Printf("    export KUBECONFIG=%s\n    %s get rmaster,rworker,srepl -A -o wide\n", env.Cluster.Kubeconfig, tools.Cluster.Kubectl)
		fmt.Printf("    %s %s\n", tools.Tcprepl, strings.Join(probeArgs, " "))
		fmt.Printf("    PATH=%s:$PATH %s tcprepl status %s --namespace %s\n", filepath.Join(env.Dir, "plugin-bin"), tools.Cluster.Kubectl, master, ns)
		<-ctx.Done()
	}
	return nil
}

func waitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
