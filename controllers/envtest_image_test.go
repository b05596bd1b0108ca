package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

const (
	operatorImageOld = "registry.example/tcprepl:1.0"
	operatorImageNew = "registry.example/tcprepl:1.1"
)

// runOperatorWith runs the operator with image and policy for as long as
// the subtest body runs.
func runOperatorWith(t *testing.T, ns, image, policy, name string, body func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		fp := newFakeProbes()
		build := testOpts
		build.DefaultImage = image
		startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp, Build: build, OperandImagePolicy: policy})
		body(t)
	})
}

// stsImage waits until the StatefulSet name runs want and the resource's
// status.image says so.
func waitImage(t *testing.T, ns, name string, obj client.Object, want string) {
	t.Helper()
	eventually(t, waitFor, name+" runs "+want, func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx0, ns, name, &sts); err != nil {
			return err
		}
		if got := sts.Spec.Template.Spec.Containers[0].Image; got != want {
			return fmt.Errorf("StatefulSet image %s", got)
		}
		if err := get(ctx0, ns, name, obj); err != nil {
			return err
		}
		if got := statusImage(obj); got != want {
			return fmt.Errorf("status.image %q", got)
		}
		return nil
	})
}

var ctx0 = context.Background()

func statusImage(obj client.Object) string {
	switch o := obj.(type) {
	case *replv1.ReplicationMaster:
		return o.Status.Image
	case *replv1.ReplicationWorker:
		return o.Status.Image
	}
	return ""
}

func updateMaster(t *testing.T, ns, name string, change func(*replv1.ReplicationMaster)) {
	t.Helper()
	eventually(t, waitFor, "update master "+name, func() error {
		var m replv1.ReplicationMaster
		if err := get(ctx0, ns, name, &m); err != nil {
			return err
		}
		change(&m)
		return k8s.Update(ctx0, &m)
	})
}

// markRolledOut writes the status the StatefulSet controller would once
// every pod runs the current template and is ready (envtest runs no
// StatefulSet controller).
func markRolledOut(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, waitFor, "mark "+name+" rolled out", func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx0, ns, name, &sts); err != nil {
			return err
		}
		n := ptr.Deref(sts.Spec.Replicas, 1)
		sts.Status = appsv1.StatefulSetStatus{
			ObservedGeneration: sts.Generation, Replicas: n, ReadyReplicas: n, UpdatedReplicas: n, AvailableReplicas: n,
			CurrentReplicas: n, CurrentRevision: "r", UpdateRevision: "r",
		}
		return k8s.Status().Update(ctx0, &sts)
	})
}

// TestOperatorImageChangeKeepsOperandsUnderPinned: an operator upgraded to
// a new image (pinned, the default) leaves the master and worker on the
// image they run, also a master whose status recorded no image (made by
// an operator version before status.image); a spec.image change rolls.
func TestOperatorImageChangeKeepsOperandsUnderPinned(t *testing.T) {
	requireEnv(t)
	ns := newNamespace(t)
	runOperatorWith(t, ns, operatorImageOld, "", "old operator", func(t *testing.T) {
		if err := k8s.Create(ctx0, minimalMaster(ns, "m1")); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Create(ctx0, minimalWorker(ns, "w1", "m1")); err != nil {
			t.Fatal(err)
		}
		waitImage(t, ns, "m1", &replv1.ReplicationMaster{}, operatorImageOld)
		waitImage(t, ns, "w1", &replv1.ReplicationWorker{}, operatorImageOld)
	})
	// The master as an operator that recorded no image left it.
	var m replv1.ReplicationMaster
	if err := get(ctx0, ns, "m1", &m); err != nil {
		t.Fatal(err)
	}
	m.Status.Image = ""
	if err := k8s.Status().Update(ctx0, &m); err != nil {
		t.Fatal(err)
	}

	runOperatorWith(t, ns, operatorImageNew, ImagePolicyPinned, "new operator", func(t *testing.T) {
		// Changes the new operator must act on: a live master setting
		// and the worker's resources. Both are applied, on the old image.
		updateMaster(t, ns, "m1", func(m *replv1.ReplicationMaster) { m.Spec.Retention.MaxRows = ptr.To[int64](999) })
		eventually(t, waitFor, "worker resources changed", func() error {
			var w replv1.ReplicationWorker
			if err := get(ctx0, ns, "w1", &w); err != nil {
				return err
			}
			w.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("300Mi")}}
			return k8s.Update(ctx0, &w)
		})
		eventually(t, waitFor, "the new operator reconciled", func() error {
			var cm corev1.ConfigMap
			if err := get(ctx0, ns, "m1-config", &cm); err != nil {
				return err
			}
			var sts appsv1.StatefulSet
			if err := get(ctx0, ns, "w1", &sts); err != nil {
				return err
			}
			if got := sts.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().String(); got != "300Mi" {
				return fmt.Errorf("worker memory limit %s", got)
			}
			var m replv1.ReplicationMaster
			if err := get(ctx0, ns, "m1", &m); err != nil {
				return err
			}
			if m.Status.ObservedGeneration != m.Generation || m.Status.Image == "" {
				return fmt.Errorf("master status: generation %d observed %d, image %q", m.Generation, m.Status.ObservedGeneration, m.Status.Image)
			}
			return nil
		})
		waitImage(t, ns, "m1", &replv1.ReplicationMaster{}, operatorImageOld)
		waitImage(t, ns, "w1", &replv1.ReplicationWorker{}, operatorImageOld)

		// Asked for by the resource: it rolls.
		updateMaster(t, ns, "m1", func(m *replv1.ReplicationMaster) { m.Spec.Image = "registry.example/custom:2" })
		waitImage(t, ns, "m1", &replv1.ReplicationMaster{}, "registry.example/custom:2")
		// Unset again, it keeps what it runs.
		updateMaster(t, ns, "m1", func(m *replv1.ReplicationMaster) { m.Spec.Image = "" })
		eventually(t, waitFor, "spec.image unset observed", func() error {
			var m replv1.ReplicationMaster
			if err := get(ctx0, ns, "m1", &m); err != nil {
				return err
			}
			if m.Status.ObservedGeneration != m.Generation {
				return fmt.Errorf("generation %d observed %d", m.Generation, m.Status.ObservedGeneration)
			}
			return nil
		})
		waitImage(t, ns, "m1", &replv1.ReplicationMaster{}, "registry.example/custom:2")
	})
}

// TestOperatorImageFollowMovesOneAtATime: under follow, operands move to
// the new operator image one at a time: the second only once the first
// has rolled out and is ready again.
func TestOperatorImageFollowMovesOneAtATime(t *testing.T) {
	requireEnv(t)
	ns := newNamespace(t)
	names := []string{"m1", "m2"}
	runOperatorWith(t, ns, operatorImageOld, "", "old operator", func(t *testing.T) {
		for _, n := range names {
			if err := k8s.Create(ctx0, minimalMaster(ns, n)); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range names {
			waitImage(t, ns, n, &replv1.ReplicationMaster{}, operatorImageOld)
			markRolledOut(t, ns, n)
		}
	})
	runOperatorWith(t, ns, operatorImageNew, ImagePolicyFollow, "new operator", func(t *testing.T) {
		var first string
		eventually(t, waitFor, "one master moves", func() error {
			for _, n := range names {
				var sts appsv1.StatefulSet
				if err := get(ctx0, ns, n, &sts); err != nil {
					return err
				}
				if sts.Spec.Template.Spec.Containers[0].Image == operatorImageNew {
					first = n
					return nil
				}
			}
			return fmt.Errorf("neither moved")
		})
		second := names[0]
		if first == second {
			second = names[1]
		}
		waitImage(t, ns, first, &replv1.ReplicationMaster{}, operatorImageNew)
		// While the first is rolling, the second stays, across reconciles
		// the operator makes meanwhile (a live change forces one).
		updateMaster(t, ns, second, func(m *replv1.ReplicationMaster) { m.Spec.Retention.MaxRows = ptr.To[int64](999) })
		eventually(t, waitFor, "the second master reconciled", func() error {
			var cm corev1.ConfigMap
			if err := get(ctx0, ns, second+"-config", &cm); err != nil {
				return err
			}
			cfg := cm.Data[specs.MasterConfigFile]
			if !strings.Contains(cfg, "maxRows: 999") {
				return fmt.Errorf("config %s", cfg)
			}
			return nil
		})
		var sts appsv1.StatefulSet
		if err := get(ctx0, ns, second, &sts); err != nil {
			t.Fatal(err)
		}
		if got := sts.Spec.Template.Spec.Containers[0].Image; got != operatorImageOld {
			t.Fatalf("%s moved to %s while %s was still rolling out", second, got, first)
		}
		// The first is ready again: the second's turn.
		markRolledOut(t, ns, first)
		waitImage(t, ns, second, &replv1.ReplicationMaster{}, operatorImageNew)
	})
}
