package controllers

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// NewScheme returns a scheme with the built-in types and the tcprepl API.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(replv1.AddToScheme(s))
	return s
}

// CacheOptions limits the operator's informers: to one namespace when
// watchNamespace is set, and for the built-in kinds to the objects the
// operator created (by the managed-by label). Caching every Secret, Pod and
// ConfigMap of a cluster would cost memory and RBAC for nothing.
func CacheOptions(watchNamespace string) cache.Options {
	managed := labels.SelectorFromSet(labels.Set{specs.LabelManagedBy: specs.ManagedBy})
	o := cache.Options{ByObject: map[client.Object]cache.ByObject{}}
	for _, obj := range []client.Object{
		&corev1.Pod{}, &corev1.Service{}, &corev1.ConfigMap{}, &corev1.Secret{},
		&appsv1.StatefulSet{}, &appsv1.Deployment{}, &networkingv1.NetworkPolicy{},
	} {
		o.ByObject[obj] = cache.ByObject{Label: managed}
	}
	if watchNamespace != "" {
		o.DefaultNamespaces = map[string]cache.Config{watchNamespace: {}}
	}
	return o
}

// OperatorOptions configure SetupOperator.
type OperatorOptions struct {
	Build specs.BuildOptions
	// NewProber makes the probe of one master.
	NewProber ProberFactory
	// StatusInterval spaces out measurement-only status writes per resource.
	StatusInterval time.Duration
	// ProbePollInterval is how often probe snapshots are checked for news.
	ProbePollInterval time.Duration
	// MaxConcurrentReconciles per controller.
	MaxConcurrentReconciles int
	// Observer replaces the probe manager as the source of snapshots
	// (tests). Probes then start and stop on ProbeController.
	Observer MasterObserver
	// ProbeController replaces the probe manager's start/stop (tests).
	ProbeController ProbeController
	// WorkerReader reads worker pods' own reports; an HTTPWorkerReader on
	// the pods' metrics port when nil.
	WorkerReader WorkerReader
	Logger       logr.Logger
	// Synapse configures the SynapseReplication controller
	// (synapse_setup.go).
	Synapse SynapseOptions
	// OperandImagePolicy is "pinned" (default) or "follow" (image.go).
	OperandImagePolicy string
}

// SetupOperator adds the probe manager and both controllers to mgr. It
// returns the probe manager (nil when the options replace it).
func SetupOperator(mgr ctrl.Manager, o OperatorOptions) (*ProbeManager, error) {
	if o.Build.DefaultImage == "" {
		return nil, fmt.Errorf("no default image: set --image or TCPREPL_IMAGE to the image that runs masters and workers")
	}
	if err := ValidateImagePolicy(o.OperandImagePolicy); err != nil {
		return nil, err
	}
	images := NewImageGate(o.OperandImagePolicy)
	if err := RegisterMetrics(); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	var (
		pm       *ProbeManager
		observer = o.Observer
		probes   = o.ProbeController
	)
	if observer == nil || probes == nil {
		if o.NewProber == nil {
			return nil, fmt.Errorf("no probe factory: the operator cannot observe masters")
		}
		pm = NewProbeManager(o.NewProber, o.ProbePollInterval, o.Logger.WithName("probes"))
		if err := mgr.Add(pm); err != nil {
			return nil, fmt.Errorf("add probe manager: %w", err)
		}
		if observer == nil {
			observer = pm
		}
		if probes == nil {
			probes = pm
		}
	}
	rec := mgr.GetEventRecorder(specs.ManagedBy)
	base := func() ReconcilerBase {
		return ReconcilerBase{
			Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Options: o.Build, Recorder: rec, APIReader: mgr.GetAPIReader(),
			Observer: observer, StatusInterval: o.StatusInterval,
			MaxConcurrentReconciles: o.MaxConcurrentReconciles,
			Images:                  images,
		}
	}
	mr := &ReplicationMasterReconciler{ReconcilerBase: base(), Probes: probes}
	wr := &ReplicationWorkerReconciler{ReconcilerBase: base()}
	wr.Workers = o.WorkerReader
	if wr.Workers == nil {
		wr.Workers = &HTTPWorkerReader{}
	}
	if pm != nil {
		mr.ProbeEvents = pm.Subscribe()
		wr.ProbeEvents = pm.Subscribe()
	}
	if err := mr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up ReplicationMaster controller: %w", err)
	}
	if err := wr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up ReplicationWorker controller: %w", err)
	}
	if err := setupSynapseReplication(mgr, o, rec); err != nil {
		return nil, err
	}
	return pm, nil
}
