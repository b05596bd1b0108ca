package controllers

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// TestCreatedEventPerOwnedObject checks that `kubectl events` shows one
// Created event per object the master owns, each naming its object,
// rather than the first one repeated.
func TestCreatedEventPerOwnedObject(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})
	m := minimalMaster(ns, "m1")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	want := []string{"ConfigMap/m1-config", "Service/m1", "Service/m1-headless", "StatefulSet/m1", "NetworkPolicy/m1"}
	eventually(t, waitFor, "one Created event per owned object", func() error {
		var list eventsv1.EventList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		created := map[string]int32{}
		for _, e := range list.Items {
			if e.Regarding.Kind != "ReplicationMaster" || e.Reason != "Created" {
				continue
			}
			count := int32(1)
			if e.Series != nil {
				count = e.Series.Count
			}
			related := "(none)"
			if e.Related != nil {
				related = e.Related.Kind + "/" + e.Related.Name
			}
			created[related] += count
		}
		for _, w := range want {
			if created[w] != 1 {
				return fmt.Errorf("%s has %d Created events; all: %v", w, created[w], created)
			}
		}
		return nil
	})
}

// TestWorkerScaleSubresourceHasSelector checks what a
// HorizontalPodAutoscaler reads: the scale subresource's selector, which
// must select the worker's pods.
func TestWorkerScaleSubresourceHasSelector(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})
	if err := k8s.Create(ctx, minimalMaster(ns, "m")); err != nil {
		t.Fatal(err)
	}
	w := minimalWorker(ns, "w", "m")
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	var scale autoscalingv1.Scale
	eventually(t, waitFor, "scale selector", func() error {
		if err := k8s.SubResource("scale").Get(ctx, w, &scale); err != nil {
			return err
		}
		if scale.Status.Selector == "" {
			return fmt.Errorf("scale status %+v has no selector", scale.Status)
		}
		return nil
	})
	sel, err := labels.Parse(scale.Status.Selector)
	if err != nil {
		t.Fatalf("selector %q: %v", scale.Status.Selector, err)
	}
	var d appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, "w", &d) })
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %q does not match the worker pods' labels %v", sel, d.Spec.Template.Labels)
	}
	if sel.Matches(labels.Set(specs.WorkerSelectorLabels(minimalWorker(ns, "other", "m")))) {
		t.Errorf("selector %q also matches another worker's pods", sel)
	}
}
