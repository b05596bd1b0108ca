package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// The fixtures below are the specs package's test fixtures: the same
// master and worker in both packages' tests.

var testOpts = specs.BuildOptions{
	DefaultImage:      "example.com/tcprepl:test",
	OperatorNamespace: "tcprepl-system",
	OperatorPodLabels: map[string]string{"app.kubernetes.io/name": "tcprepl", "app.kubernetes.io/component": "operator"},
}

// newMaster returns a master as the API server would store it: defaults
// filled in.
func newMaster(mut ...func(*replv1.ReplicationMaster)) *replv1.ReplicationMaster {
	m := &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: "m1", Namespace: "ns", UID: "uid-m1", Generation: 1},
		Spec: replv1.ReplicationMasterSpec{
			ServerName:      "matrix.example.org",
			ReplicationPort: 9092,
			HTTPPort:        9093,
			Storage:         replv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))},
			KeepAlive: replv1.KeepAliveSpec{
				PingInterval: &metav1.Duration{Duration: 5 * time.Second},
				PingTimeout:  &metav1.Duration{Duration: 25 * time.Second},
			},
			Limits: replv1.LimitsSpec{MaxPendingCommands: 10000, MaxLineLength: 16384},
		},
	}
	for _, f := range mut {
		f(m)
	}
	return m
}

func newWorker(mut ...func(*replv1.ReplicationWorker)) *replv1.ReplicationWorker {
	w := &replv1.ReplicationWorker{
		ObjectMeta: metav1.ObjectMeta{Name: "w1", Namespace: "ns", UID: "uid-w1", Generation: 1},
		Spec: replv1.ReplicationWorkerSpec{
			MasterRef:     replv1.MasterReference{Name: "m1"},
			Replicas:      ptr.To[int32](2),
			Streams:       []string{"ALL"},
			MaxLagSeconds: 30,
		},
	}
	for _, f := range mut {
		f(w)
	}
	return w
}

// updateRetrying reads the object at key into obj, applies change and
// writes it back, again from a fresh read when the write conflicts: the
// operator writes the same object's status meanwhile, so a plain read and
// update fails now and then with "the object has been modified".
func updateRetrying(ctx context.Context, key client.ObjectKey, obj client.Object, change func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, key, obj); err != nil {
			return err
		}
		change()
		return k8s.Update(ctx, obj)
	})
}
