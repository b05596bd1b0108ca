package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// A worker runs as a StatefulSet whose pods each get a positions claim, and
// the reference worker's --on-log-change follows the master's storage.
func TestWorkerStatefulSetWithClaimPerPod(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	m := minimalMaster(ns, "m")
	m.Spec.Storage = replv1.StorageSpec{Ephemeral: true}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	w := minimalWorker(ns, "w", "m")
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	eventually(t, waitFor, "worker StatefulSet", func() error {
		if err := get(ctx, ns, "w", &sts); err != nil {
			return err
		}
		return controlledBy(&sts, w)
	})
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "state" {
		t.Fatalf("claim templates %+v, want one named state", sts.Spec.VolumeClaimTemplates)
	}
	if got := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != "1Gi" {
		t.Errorf("claim size %s, want the 1Gi default", got.String())
	}
	if args := sts.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--on-log-change=resync") {
		t.Errorf("args %v: an ephemeral master's workers should resync on a new log", args)
	}

	// spec.onLogChange overrides the default, and the pods roll out with it.
	var live replv1.ReplicationWorker
	if err := updateRetrying(ctx, client.ObjectKeyFromObject(w), &live, func() {
		live.Spec.OnLogChange = replv1.LogChangeStop
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "--on-log-change=stop", func() error {
		if err := get(ctx, ns, "w", &sts); err != nil {
			return err
		}
		if args := sts.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--on-log-change=stop") {
			return fmt.Errorf("args %v", args)
		}
		return nil
	})
}

// The Deployment an earlier operator version made for a worker is deleted
// when the worker moves to a StatefulSet; a Deployment of the same name the
// worker does not control is left alone.
func TestWorkerDeploymentOfEarlierVersionDeleted(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)

	m := minimalMaster(ns, "m")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	owned := minimalWorker(ns, "old", "m")
	foreign := minimalWorker(ns, "foreign", "m")
	for _, w := range []*replv1.ReplicationWorker{owned, foreign} {
		if err := k8s.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// The Deployments as the earlier version left them, before the
	// operator starts: one controlled by its worker, one by nobody.
	legacy := func(w *replv1.ReplicationWorker, controlled bool) *appsv1.Deployment {
		labels := specs.WorkerPodLabels(w)
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: ns, Labels: labels},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: specs.WorkerSelectorLabels(w)},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "x"}}},
				},
			},
		}
		if controlled {
			d.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: replv1.GroupVersion.String(), Kind: "ReplicationWorker", Name: w.Name, UID: w.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}}
		}
		return d
	}
	if err := k8s.Create(ctx, legacy(owned, true)); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, legacy(foreign, false)); err != nil {
		t.Fatal(err)
	}

	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	// envtest runs no garbage collector: a foreground deletion leaves the
	// Deployment with a deletion timestamp and the foregroundDeletion
	// finalizer, which is what the operator asked for.
	eventually(t, waitFor, "the worker's own Deployment deleted", func() error {
		var d appsv1.Deployment
		switch err := get(ctx, ns, "old", &d); {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case d.DeletionTimestamp == nil:
			return fmt.Errorf("Deployment old not deleted")
		}
		return nil
	})
	eventually(t, waitFor, "MigratedToStatefulSet event", func() error {
		return hasEvent(ctx, ns, "ReplicationWorker", "old", corev1.EventTypeNormal, "MigratedToStatefulSet")
	})
	eventually(t, waitFor, "StatefulSets of both workers", func() error {
		for _, name := range []string{"old", "foreign"} {
			if err := get(ctx, ns, name, &appsv1.StatefulSet{}); err != nil {
				return err
			}
		}
		return nil
	})
	var d appsv1.Deployment
	if err := get(ctx, ns, "foreign", &d); err != nil || d.DeletionTimestamp != nil {
		t.Errorf("a Deployment the worker does not control was deleted (err %v, deletionTimestamp %v)", err, d.DeletionTimestamp)
	}
}
