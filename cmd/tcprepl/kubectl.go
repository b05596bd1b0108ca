package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// kubectlPluginName is the file name kubectl looks for on PATH to run
// `kubectl tcprepl ...` (its plugin mechanism: kubectl-<name>).
const kubectlPluginName = "kubectl-tcprepl"

// rootCommandFor is the command tree for how the binary was started. Run
// as kubectl-tcprepl (a copy or link that kubectl found on PATH), the
// plugin's commands are the root: `kubectl tcprepl status NAME` runs
// `kubectl-tcprepl status NAME`. Under any other name it is tcprepl, with
// the same commands under `tcprepl kubectl`.
func rootCommandFor(argv0 string) *cobra.Command {
	if strings.TrimSuffix(filepath.Base(argv0), ".exe") == kubectlPluginName {
		return newKubectlCommand(defaultKubectlDeps(), true)
	}
	root := newRootCommand()
	root.AddCommand(newKubectlCommand(defaultKubectlDeps(), false))
	return root
}

// kubectlDeps are what the plugin's commands reach outside the process,
// replaced in tests: the API (a fake client), the clock, the probe.
type kubectlDeps struct {
	// newClient builds a client and the namespace to use from the flags.
	newClient func(*kubeFlags) (client.Client, string, error)
	now       func() time.Time
	// probeOnce probes a master once (probe.Once).
	probeOnce func(ctx context.Context, cfg probe.Config, wait time.Duration) (probe.Snapshot, error)
	getenv    func(string) string
}

func defaultKubectlDeps() kubectlDeps {
	return kubectlDeps{newClient: (*kubeFlags).client, now: time.Now, probeOnce: probe.Once, getenv: os.Getenv}
}

// kubeFlags are kubectl's flags for choosing the cluster, as every kubectl
// plugin takes them (the subset of genericclioptions that matters here;
// the full set's --tls-server-name would clash with the replication TLS
// flag of the same name).
type kubeFlags struct {
	kubeconfig string
	context    string
	cluster    string
	user       string
	namespace  string
	timeout    time.Duration
}

func (f *kubeFlags) addFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.kubeconfig, clientcmd.RecommendedConfigPathFlag, "", "path to the kubeconfig file (default $KUBECONFIG, else ~/.kube/config)")
	fl.StringVar(&f.context, "context", "", "the kubeconfig context to use")
	fl.StringVar(&f.cluster, "cluster", "", "the kubeconfig cluster to use")
	fl.StringVar(&f.user, "user", "", "the kubeconfig user to use")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "the namespace of the resource (default the context's namespace)")
	fl.DurationVar(&f.timeout, "request-timeout", 30*time.Second, "how long to wait for the API server on each request")
}

// client builds a controller-runtime client from the kubeconfig, as kubectl
// would load it, and returns the namespace the flags and context select.
func (f *kubeFlags) client() (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.context}
	overrides.Context.Cluster = f.cluster
	overrides.Context.AuthInfo = f.user
	overrides.Context.Namespace = f.namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("read the namespace from the kubeconfig: %w; pass --namespace", err)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load the kubeconfig: %w; pass --kubeconfig or set KUBECONFIG", err)
	}
	cfg.Timeout = f.timeout
	c, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		return nil, "", fmt.Errorf("build an API client for %s: %w", cfg.Host, err)
	}
	return c, ns, nil
}

// newKubectlCommand is `kubectl tcprepl` (asPlugin: the root of the
// kubectl-tcprepl binary) or `tcprepl kubectl`.
func newKubectlCommand(deps kubectlDeps, asPlugin bool) *cobra.Command {
	var kf kubeFlags
	cmd := &cobra.Command{
		Use:   "kubectl",
		Short: "The kubectl plugin: status and probe of a ReplicationMaster or ReplicationWorker",
		Long: `The kubectl plugin. Installed as kubectl-tcprepl on PATH (make install-plugin),
kubectl runs it as ` + "`kubectl tcprepl`" + `; the same commands are ` + "`tcprepl kubectl`" + `.

  status NAME   a master (or worker) from the API: conditions, streams, pods,
                workers, recent events, and a live probe of the master
  probe NAME    tcprepl probe against the master NAME, its address and server
                name read from the resource

They read the cluster with your kubeconfig (--kubeconfig, --context,
-n/--namespace) and need get/list on the tcprepl resources, pods and events.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if asPlugin {
		cmd.Use = kubectlPluginName
		cmd.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl tcprepl"}
		cmd.CompletionOptions.DisableDefaultCmd = true
		cmd.AddCommand(newVersionCommand())
	}
	kf.addFlags(cmd.PersistentFlags())
	cmd.AddCommand(newKubectlStatusCommand(deps, &kf))
	cmd.AddCommand(newKubectlProbeCommand(deps, &kf))
	return cmd
}

// probeTargetFlags override where the plugin probes a master, for a
// machine outside the cluster network.
type probeTargetFlags struct {
	address string
	httpURL string
	wait    time.Duration
	tls     tlsClientFlags
}

func (f *probeTargetFlags) addFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.address, "probe-address", "", "probe the master at this HOST:PORT instead of its pod's IP (for a machine outside the pod network: a port-forward, a LoadBalancer)")
	fl.StringVar(&f.httpURL, "probe-http-url", "", "the master's HTTP API for the probe (default the --probe-address host on the master's httpPort, else the pod's IP)")
	fl.DurationVar(&f.wait, "probe-wait", 5*time.Second, "how long the probe waits for a first heartbeat and the connection table")
	f.tls.register(fl)
}

// probeTarget is where and how the plugin probes a master.
type probeTarget struct {
	Address    string `json:"address"`
	ServerName string `json:"serverName"`
	HTTPURL    string `json:"httpURL,omitempty"`
	// Pod is the master pod probed.
	Pod string `json:"pod"`
	// Source says where Address came from: the --probe-address flag, the
	// master's probe annotation, the pod's IP, or the Service's DNS name.
	Source string `json:"source"`
	// TLSServerName is the name the master's certificate must carry, when
	// TLS is used.
	TLSServerName string `json:"tlsServerName,omitempty"`
}

// masterProbePod is the master pod the plugin probes. With standbys only
// the active pod serves; before the operator has seen one, the first pod.
func masterProbePod(m *replv1.ReplicationMaster) string {
	return cmp.Or(m.Status.ActivePod, specs.MasterPodName(m))
}

// resolveProbeTarget finds where to probe master m: --probe-address (and
// --probe-http-url) when given, else the operator's own rule
// (controllers.ProbeTargetFor: the master's probe annotations, else the
// pod's IP, else the Service's DNS name).
func resolveProbeTarget(ctx context.Context, c client.Client, m *replv1.ReplicationMaster, f *probeTargetFlags) (probeTarget, error) {
	podName := masterProbePod(m)
	var pod corev1.Pod
	podp := &pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: podName}, &pod); err != nil {
		if !apierrors.IsNotFound(err) {
			return probeTarget{}, fmt.Errorf("read master pod %s/%s: %w", m.Namespace, podName, err)
		}
		podp = nil
	}
	t := controllers.ProbeTargetFor(m, podp)
	out := probeTarget{Address: t.Address, ServerName: t.ServerName, HTTPURL: t.HTTPURL, Pod: podName}
	switch {
	case m.Annotations[specs.AnnotationProbeAddress] != "":
		out.Source = "annotation " + specs.AnnotationProbeAddress
	case podp != nil && pod.Status.PodIP != "" && pod.DeletionTimestamp == nil:
		out.Source = "pod " + podName + " IP"
	default:
		out.Source = "Service DNS name (the pod has no IP)"
	}
	if f.address != "" {
		host, _, err := net.SplitHostPort(f.address)
		if err != nil {
			return probeTarget{}, fmt.Errorf("--probe-address %q: %w; give it as HOST:PORT", f.address, err)
		}
		out.Address = f.address
		out.Source = "--probe-address"
		out.HTTPURL = "http://" + net.JoinHostPort(host, strconv.Itoa(int(m.Spec.HTTPPort)))
	}
	if f.httpURL != "" {
		out.HTTPURL = f.httpURL
	}
	return out, nil
}

// probeConfig is the probe's config for target t, with TLS when the flags
// (or the TCPREPL_TLS_* environment) ask for it. The certificate of a
// master is issued for its Service's name, not the pod IP the plugin dials,
// so that name is the TLS server name unless --tls-server-name says else.
func (f *probeTargetFlags) probeConfig(m *replv1.ReplicationMaster, t *probeTarget, getenv func(string) string, interval time.Duration) (probe.Config, error) {
	cfg := probe.Config{
		Address:           t.Address,
		ServerName:        t.ServerName,
		HTTPURL:           t.HTTPURL,
		HeartbeatInterval: interval,
		Logger:            logr.Discard(),
	}
	tlsCfg, err := f.tls.config(getenv)
	if err != nil {
		return cfg, err
	}
	if tlsCfg != nil {
		if tlsCfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(specs.MasterEndpoint(m))
			tlsCfg.ServerName = host
		}
		t.TLSServerName = tlsCfg.ServerName
		cfg.Dial = tlsDial(tlsCfg)
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	}
	return cfg, nil
}

// getMaster reads ReplicationMaster ns/name, with an error that says what
// to do when it is not there.
func getMaster(ctx context.Context, c client.Client, ns, name string) (*replv1.ReplicationMaster, error) {
	var m replv1.ReplicationMaster
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no ReplicationMaster %s in namespace %s; list them with `kubectl get rmaster -A`, pick the namespace with -n", name, ns)
		}
		return nil, fmt.Errorf("read ReplicationMaster %s/%s: %w", ns, name, err)
	}
	return &m, nil
}

type kubectlProbeFlags struct {
	target   probeTargetFlags
	output   string
	watch    bool
	interval time.Duration
}

// newKubectlProbeCommand is `kubectl tcprepl probe NAME`: `tcprepl probe`
// with the master's address and server name read from the resource.
func newKubectlProbeCommand(deps kubectlDeps, kf *kubeFlags) *cobra.Command {
	var f kubectlProbeFlags
	cmd := &cobra.Command{
		Use:   "probe NAME",
		Short: "Probe the ReplicationMaster NAME: tcprepl probe with its address and server name from the resource",
		Long: `Read the ReplicationMaster NAME and run ` + "`tcprepl probe`" + ` against it: its server
name from spec.serverName, its address from the master pod's IP (or the
master's tcprepl.io/probe-address annotation, or --probe-address), its HTTP
API on spec.httpPort. Prints the same table or JSON, and exits 1 in the
same cases: unreachable, wrong server name, protocol error, HTTP API
unreadable.

The pod IP is reachable from inside the cluster network; from a laptop use
` + "`kubectl port-forward pod/NAME-0 9092 9093`" + ` and --probe-address 127.0.0.1:9092.`,
		Example: `  kubectl tcprepl probe synapse
  kubectl tcprepl probe synapse -n matrix -o json
  kubectl tcprepl probe synapse --probe-address 127.0.0.1:9092 --watch`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output != "table" && f.output != "json" {
				return fmt.Errorf("--output %q: use table or json", f.output)
			}
			if f.interval <= 0 || f.target.wait <= 0 {
				return errors.New("--interval and --probe-wait must be positive durations, e.g. 2s")
			}
			c, ns, err := deps.newClient(kf)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			m, err := getMaster(ctx, c, ns, args[0])
			if err != nil {
				return err
			}
			t, err := resolveProbeTarget(ctx, c, m, &f.target)
			if err != nil {
				return err
			}
			cfg, err := f.target.probeConfig(m, &t, deps.getenv, f.interval)
			if err != nil {
				return err
			}
			if f.watch {
				return watchProbe(ctx, cmd.OutOrStdout(), cfg, f.output, f.interval)
			}
			snap, perr := deps.probeOnce(ctx, cfg, f.target.wait)
			if snap.MeasuredAt.IsZero() {
				return perr
			}
			if err := render(cmd.OutOrStdout(), snap, f.output); err != nil {
				return err
			}
			if perr != nil {
				return fmt.Errorf("probe of ReplicationMaster %s/%s at %s (%s): %w", ns, m.Name, t.Address, t.Source, perr)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	f.target.addFlags(fl)
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fl.BoolVarP(&f.watch, "watch", "w", false, "keep probing and print again every --interval until interrupted")
	fl.DurationVar(&f.interval, "interval", 2*time.Second, "the heartbeat interval, and with --watch how often to print")
	return cmd
}
