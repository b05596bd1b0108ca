package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func stsRunning(name, image string, ready bool) *appsv1.StatefulSet {
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Generation: 2},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}},
		},
	}
	if ready {
		s.Status = appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, CurrentRevision: "r", UpdateRevision: "r"}
	}
	return s
}

// TestImageGateChoose: the image chosen for an operand by spec, record,
// running StatefulSet and policy; under follow one operand moves at a
// time.
func TestImageGateChoose(t *testing.T) {
	const oldImg, newImg = "img:1", "img:2"
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(
		stsRunning("a", oldImg, true), stsRunning("b", oldImg, true), stsRunning("moving", newImg, false),
	).Build()
	key := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }
	tests := map[string]struct {
		policy       string
		spec, record string
		sts          string
		want         operandChoice
	}{
		"spec wins":                   {policy: ImagePolicyPinned, spec: "custom:1", record: oldImg, sts: "a", want: operandChoice{image: "custom:1"}},
		"pinned keeps the record":     {policy: ImagePolicyPinned, record: oldImg, sts: "a", want: operandChoice{image: oldImg}},
		"pinned adopts what runs":     {policy: ImagePolicyPinned, sts: "a", want: operandChoice{image: oldImg}},
		"a new operand takes target":  {policy: ImagePolicyPinned, sts: "none", want: operandChoice{image: newImg}},
		"follow moves when it may":    {policy: ImagePolicyFollow, record: oldImg, sts: "a", want: operandChoice{image: newImg}},
		"follow keeps a moved record": {policy: ImagePolicyFollow, record: newImg, sts: "moving", want: operandChoice{image: newImg}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewImageGate(tc.policy)
			got, err := g.Choose(context.Background(), c, "x/"+tc.sts, tc.spec, tc.record, key(tc.sts), newImg)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Choose = %+v, want %+v", got, tc.want)
			}
		})
	}

	t.Run("follow one at a time", func(t *testing.T) {
		g := NewImageGate(ImagePolicyFollow)
		ctx := context.Background()
		// "moving" has moved but is not ready: it holds the turn.
		if got, _ := g.Choose(ctx, c, "m/moving", "", newImg, key("moving"), newImg); got.image != newImg || got.wait {
			t.Fatalf("moving: %+v", got)
		}
		if got, _ := g.Choose(ctx, c, "m/a", "", oldImg, key("a"), newImg); got.image != oldImg || !got.wait {
			t.Fatalf("a while moving rolls out: %+v, want to wait on %s", got, oldImg)
		}
		// Gone: its turn is free.
		g.Forget("m/moving")
		if got, _ := g.Choose(ctx, c, "m/a", "", oldImg, key("a"), newImg); got.image != newImg || got.wait {
			t.Fatalf("a after moving is gone: %+v", got)
		}
		if got, _ := g.Choose(ctx, c, "m/b", "", oldImg, key("b"), newImg); !got.wait {
			t.Fatalf("b while a holds the turn: %+v", got)
		}
		// A pinned spec.image gives the turn back.
		if got, _ := g.Choose(ctx, c, "m/a", "custom:1", newImg, key("a"), newImg); got.image != "custom:1" {
			t.Fatalf("a with spec.image: %+v", got)
		}
		if got, _ := g.Choose(ctx, c, "m/b", "", oldImg, key("b"), newImg); got.image != newImg || got.wait {
			t.Fatalf("b after a released the turn: %+v", got)
		}
	})

	t.Run("a failed read is an error", func(t *testing.T) {
		broken := fake.NewClientBuilder().WithScheme(NewScheme()).WithInterceptorFuncs(interceptor.Funcs{
			Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
				return errors.New("apiserver down")
			},
		}).Build()
		_, err := NewImageGate("").Choose(context.Background(), broken, "m/a", "", "", key("a"), newImg)
		if err == nil || !strings.Contains(err.Error(), "learn the image it runs") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestValidateImagePolicy(t *testing.T) {
	for p, ok := range map[string]bool{"": true, ImagePolicyPinned: true, ImagePolicyFollow: true, "always": false} {
		if err := ValidateImagePolicy(p); (err == nil) != ok {
			t.Errorf("ValidateImagePolicy(%q) = %v", p, err)
		}
	}
}

func TestOperandChoiceRequeue(t *testing.T) {
	waiting := operandChoice{image: "a", wait: true}
	if got := waiting.requeue(ctrlResult(0)); got.RequeueAfter != imageWaitRetry {
		t.Errorf("waiting, no requeue: %v", got)
	}
	if got := waiting.requeue(ctrlResult(imageWaitRetry / 2)); got.RequeueAfter != imageWaitRetry/2 {
		t.Errorf("waiting, sooner requeue kept: %v", got)
	}
	if got := (operandChoice{image: "a"}).requeue(ctrlResult(0)); got.RequeueAfter != 0 {
		t.Errorf("not waiting: %v", got)
	}
	if got := (operandChoice{}).recorded("old"); got != "old" {
		t.Errorf("no choice recorded %q, want old kept", got)
	}
}

func ctrlResult(d time.Duration) ctrl.Result { return ctrl.Result{RequeueAfter: d} }
