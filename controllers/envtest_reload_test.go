package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// TestLiveConfigChangeDoesNotRollTheMaster: changing retention or the
// keep-alive rewrites the master's ConfigMap (the master re-reads it) and
// leaves the pod template alone; a restart setting (a custom stream)
// changes the restart hash and rolls it.
func TestLiveConfigChangeDoesNotRollTheMaster(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})
	m := minimalMaster(ns, "m1")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(m)
	var before appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet created", func() error { return get(ctx, ns, "m1", &before) })
	if before.Spec.Template.Annotations[specs.AnnotationConfigHash] == "" {
		t.Fatalf("pod template has no %s annotation: %v", specs.AnnotationConfigHash, before.Spec.Template.Annotations)
	}

	update := func(change func(*replv1.ReplicationMaster)) {
		t.Helper()
		eventually(t, waitFor, "update master", func() error {
			var live replv1.ReplicationMaster
			if err := k8s.Get(ctx, key, &live); err != nil {
				return err
			}
			change(&live)
			return k8s.Update(ctx, &live)
		})
	}
	configHas := func(what string) {
		t.Helper()
		eventually(t, waitFor, "ConfigMap has "+what, func() error {
			var cm corev1.ConfigMap
			if err := get(ctx, ns, "m1-config", &cm); err != nil {
				return err
			}
			if !strings.Contains(cm.Data[specs.MasterConfigFile], what) {
				return fmt.Errorf("config:\n%s", cm.Data[specs.MasterConfigFile])
			}
			return nil
		})
	}

	update(func(m *replv1.ReplicationMaster) {
		m.Spec.Retention.MaxRows = ptr.To[int64](123456)
		m.Spec.KeepAlive.PingInterval = &metav1.Duration{Duration: 7 * time.Second}
	})
	configHas("maxRows: 123456")
	configHas("pingInterval: 7s")
	// The reconcile that wrote the ConfigMap has also applied the
	// StatefulSet; wait for the status to catch up with the generation so
	// that a roll, had there been one, is already visible.
	eventually(t, waitFor, "status observed the live change", func() error {
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, key, &live); err != nil {
			return err
		}
		if live.Status.ObservedGeneration != live.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", live.Status.ObservedGeneration, live.Generation)
		}
		return nil
	})
	var after appsv1.StatefulSet
	if err := get(ctx, ns, "m1", &after); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(before.Spec.Template, after.Spec.Template) {
		t.Fatalf("a live change changed the pod template:\nbefore %+v\nafter  %+v", before.Spec.Template.Annotations, after.Spec.Template.Annotations)
	}

	update(func(m *replv1.ReplicationMaster) {
		m.Spec.Streams.Custom = []replv1.CustomStream{{Name: "audit_log"}}
	})
	configHas("audit_log")
	eventually(t, waitFor, "a restart change rolls the pod template", func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx, ns, "m1", &sts); err != nil {
			return err
		}
		if sts.Spec.Template.Annotations[specs.AnnotationConfigHash] == before.Spec.Template.Annotations[specs.AnnotationConfigHash] {
			return fmt.Errorf("restart hash unchanged: %s", before.Spec.Template.Annotations[specs.AnnotationConfigHash])
		}
		return nil
	})
}
