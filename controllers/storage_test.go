package controllers

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// TestGrownStorageIsNotDrift: after spec.storage.size grows, the
// StatefulSet's claim template (immutable) keeps the old size; that must not
// count as a hand edit, or every reconcile would rewrite the StatefulSet.
func TestGrownStorageIsNotDrift(t *testing.T) {
	scheme := NewScheme()
	m := newMaster()
	m.Spec.Storage.Ephemeral = false
	m.Spec.Storage.Size = ptr.To(resource.MustParse("1Gi"))
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	apply := func() applyOutcome {
		t.Helper()
		_, out, err := applyOwned(context.Background(), c, nil, scheme, m, specs.BuildMasterStatefulSet(m, testOpts, "hash"), statefulSetState)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := apply(); out != outcomeCreated {
		t.Fatalf("first apply: %s", out)
	}
	m.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
	if out := apply(); out != outcomeUpdated {
		t.Fatalf("apply after growing: %s, want %s", out, outcomeUpdated)
	}
	for range 2 {
		if out := apply(); out != outcomeUnchanged {
			t.Fatalf("apply again: %s, want %s", out, outcomeUnchanged)
		}
	}
}
