// Command testkubelet runs the project's test kubelet (test/kubelet) against
// a cluster: it registers a Node, binds unscheduled pods to it and runs their
// containers as local processes. It is for clusters without a container
// runtime, such as the one `make demo` starts; see test/kubelet for what it
// does and does not emulate.
//
//	testkubelet --kubeconfig admin.kubeconfig --command tcprepl=bin/tcprepl
//
// With --start-cluster it first starts a local control plane from the
// binaries `make tools` builds (test/cluster), prints its kubeconfig, and
// stops it on exit: a whole cluster for manual experiments.
//
//	go run ./hack/testkubelet --start-cluster --command tcprepl=bin/tcprepl
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/kubelet"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testkubelet:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster (needs rights to bind pods and write pod and node status)")
		nodeName   = flag.String("node-name", "testkubelet", "name of the Node to register")
		dir        = flag.String("dir", "", "work dir for pod dirs, logs and claim data (default: a temp dir removed on exit)")
		subnet     = flag.Int("subnet", 0, "use 127.<subnet>.0.0/16 for pod and Service addresses (default: a free one)")
		startClust = flag.Bool("start-cluster", false, "start a local control plane (etcd, kube-apiserver, kube-controller-manager from `make tools`) and use it")
		commands   listFlag
		entries    listFlag
		layouts    listFlag
	)
	flag.Var(&commands, "command", "NAME=PATH: run PATH when a container's command is NAME (repeatable), e.g. tcprepl=bin/tcprepl")
	flag.Var(&layouts, "image-layout", "DIR: run every container from its image, found in this OCI image layout (repeatable; e.g. bin/image/oci from `make image`; needs root)")
	flag.Var(&entries, "entrypoint", "IMAGE=PROGRAM: the entrypoint of IMAGE (name without tag; * for any) for containers without a command (repeatable)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *startClust {
		bins, err := cluster.BinariesFromEnv("")
		if err != nil {
			return err
		}
		c, err := cluster.Start(ctx, cluster.Options{Binaries: bins})
		if err != nil {
			return err
		}
		defer func() {
			if err := c.Stop(); err != nil {
				log.Printf("stop cluster: %v", err)
			}
		}()
		fmt.Printf("cluster up at %s\nexport KUBECONFIG=%s\n", c.Server, c.Kubeconfig)
		*kubeconfig = c.Kubeconfig
	}
	if *kubeconfig == "" {
		return fmt.Errorf("no kubeconfig: pass --kubeconfig, set KUBECONFIG or use --start-cluster")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", *kubeconfig, err)
	}
	cmdTable := map[string]string{}
	for _, c := range commands {
		name, path, ok := strings.Cut(c, "=")
		if !ok || name == "" || path == "" {
			return fmt.Errorf("--command %q: want NAME=PATH", c)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("--command %q: %w", c, err)
		}
		cmdTable[name] = abs
	}
	entrypoints := map[string][]string{}
	for _, e := range entries {
		image, prog, ok := strings.Cut(e, "=")
		if !ok || image == "" || prog == "" {
			return fmt.Errorf("--entrypoint %q: want IMAGE=PROGRAM", e)
		}
		entrypoints[image] = strings.Fields(prog)
	}
	k, err := kubelet.New(kubelet.Options{
		RESTConfig: cfg, NodeName: *nodeName, Dir: *dir, Subnet: *subnet,
		Commands: cmdTable, Entrypoints: entrypoints, ImageLayouts: layouts,
	})
	if err != nil {
		return err
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	return k.Run(ctx)
}
