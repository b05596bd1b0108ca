package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tcprepl/tcprepl/controllers"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
	"github.com/tcprepl/tcprepl/internal/version"
)

// operatorFlags are the settings of `tcprepl operator`.
type operatorFlags struct {
	metricsAddr             string
	healthAddr              string
	leaderElect             bool
	leaderElectionNamespace string
	watchNamespace          string
	image                   string
	operatorNamespace       string
	operatorPodLabels       string
	statusInterval          time.Duration
	probePollInterval       time.Duration
	heartbeatInterval       time.Duration
	concurrency             int
	operandImagePolicy      string
}

// defaultImage is the image masters and workers run unless a resource or
// --image says otherwise: the operator's own release, since one image serves
// every role.
func defaultImage() string {
	if img := os.Getenv("TCPREPL_IMAGE"); img != "" {
		return img
	}
	return "ghcr.io/tcprepl/tcprepl:" + version.Version
}

func newOperatorCommand() *cobra.Command {
	f := operatorFlags{}
	zapOpts := zap.Options{}
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Run the Kubernetes operator for ReplicationMaster, ReplicationWorker and SynapseReplication",
		Long: `Run the controller-runtime manager that reconciles ReplicationMaster and
ReplicationWorker resources into StatefulSets, Deployments, Services,
ConfigMaps, Secrets and NetworkPolicies, probes every master, and writes
positions and lag into the resources' status. For every SynapseReplication
it watches an existing Synapse deployment over its Redis and reports each
stream's writers, missing writers and Redis output buffers.

The cluster is found like kubectl does: --kubeconfig, else $KUBECONFIG,
else the in-cluster service account, else ~/.kube/config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOperator(f, zapOpts)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address the Prometheus /metrics endpoint listens on; \"0\" disables it")
	fs.StringVar(&f.healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader so that only one of several operator replicas reconciles and probes")
	fs.StringVar(&f.leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: the operator's own namespace)")
	fs.StringVar(&f.watchNamespace, "watch-namespace", os.Getenv("WATCH_NAMESPACE"), "watch only this namespace (default: all namespaces; env WATCH_NAMESPACE)")
	fs.StringVar(&f.image, "image", defaultImage(), "image for masters and workers whose spec names none (env TCPREPL_IMAGE)")
	fs.StringVar(&f.operatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"), "namespace the operator runs in, admitted by masters' NetworkPolicies (env POD_NAMESPACE; empty admits operator pods from any namespace)")
	fs.StringVar(&f.operatorPodLabels, "operator-pod-labels", "app.kubernetes.io/name=tcprepl,app.kubernetes.io/component=operator", "labels of the operator's pods, admitted by masters' NetworkPolicies")
	fs.DurationVar(&f.statusInterval, "status-interval", controllers.DefaultStatusInterval, "least time between two status writes of one resource that only carry new positions, rates or lag")
	fs.DurationVar(&f.probePollInterval, "probe-poll-interval", time.Second, "how often the probes' snapshots are checked for changes")
	fs.DurationVar(&f.heartbeatInterval, "probe-heartbeat-interval", probe.DefaultHeartbeatInterval, "how often each probe sends a heartbeat through its master and reads its connection table")
	fs.IntVar(&f.concurrency, "max-concurrent-reconciles", 4, "reconciles run in parallel per controller")
	fs.StringVar(&f.operandImagePolicy, "operand-image-policy", controllers.ImagePolicyPinned,
		"pinned: a master or worker without spec.image keeps the image it was given (status.image) when --image changes; follow: they move to --image one at a time, each once the previous is ready again")
	// --kubeconfig is controller-runtime's own flag, so its config loading
	// (flag, $KUBECONFIG, in-cluster, home) applies unchanged.
	if kf := flag.CommandLine.Lookup(config.KubeconfigFlagName); kf != nil {
		fs.AddGoFlag(kf)
	}
	gofs := flag.NewFlagSet("zap", flag.ContinueOnError)
	zapOpts.BindFlags(gofs)
	fs.AddGoFlagSet(gofs)
	return cmd
}

func runOperator(f operatorFlags, zapOpts zap.Options) error {
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)

	podLabels, err := labels.ConvertSelectorToLabelsMap(f.operatorPodLabels)
	if err != nil {
		return fmt.Errorf("--operator-pod-labels %q: %w; give key=value pairs separated by commas", f.operatorPodLabels, err)
	}
	if f.statusInterval < time.Second {
		return errors.New("--status-interval must be at least 1s: shorter intervals flood the API server with status writes")
	}
	if err := controllers.ValidateImagePolicy(f.operandImagePolicy); err != nil {
		return fmt.Errorf("--operand-image-policy: %w", err)
	}
	if f.concurrency < 1 {
		return errors.New("--max-concurrent-reconciles must be at least 1")
	}

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("find the cluster: %w; pass --kubeconfig, set KUBECONFIG, or run in a pod", err)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  controllers.NewScheme(),
		Cache:                   controllers.CacheOptions(f.watchNamespace),
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.healthAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        "tcprepl-operator.tcprepl.io",
		LeaderElectionNamespace: f.leaderElectionNamespace,
		// The leader steps down cleanly on SIGTERM so a standby takes over
		// at once instead of after the lease expires.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	heartbeat := f.heartbeatInterval
	_, err = controllers.SetupOperator(mgr, controllers.OperatorOptions{
		Build: specs.BuildOptions{
			DefaultImage:      f.image,
			OperatorNamespace: f.operatorNamespace,
			OperatorPodLabels: podLabels,
		},
		NewProber: func(t controllers.ProbeTarget) (controllers.Prober, error) {
			cfg := probe.Config{
				Address: t.Address, ServerName: t.ServerName, HTTPURL: t.HTTPURL,
				HeartbeatInterval: heartbeat,
				Logger:            log.WithName("probe"),
				// Each probe's tcprepl_probe_* series (labelled with the
				// master's namespace and name) join the operator's
				// /metrics while it runs.
				Registerer:      ctrlmetrics.Registry,
				MasterNamespace: t.Namespace, MasterName: t.Name,
			}
			// A master with spec.tls: the probe's certificate and CA.
			if err := t.ConfigureTLS(&cfg); err != nil {
				return nil, err
			}
			return probe.New(cfg)
		},
		StatusInterval:          f.statusInterval,
		ProbePollInterval:       f.probePollInterval,
		MaxConcurrentReconciles: f.concurrency,
		Logger:                  log,
		Synapse:                 synapseOptions(log.WithName("synapse")),
		OperandImagePolicy:      f.operandImagePolicy,
	})
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	log.Info("starting operator", "version", version.Version, "image", f.image,
		"watchNamespace", orAll(f.watchNamespace), "leaderElection", f.leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("operator stopped: %w", err)
	}
	return nil
}

func orAll(ns string) string {
	if strings.TrimSpace(ns) == "" {
		return "(all)"
	}
	return ns
}
