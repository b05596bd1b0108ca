package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Which image a master or worker runs. A resource's spec.image always
// wins. Without one, the operator records the image it used in
// status.image and keeps using it, so that upgrading the operator (a new
// --image) restarts nothing: under the pinned policy (the default) an
// operand changes image only when its spec.image changes; under follow,
// operands move to the operator's image one at a time, the next only once
// the previous has rolled out and is ready again.

// Operand image policies (--operand-image-policy).
const (
	ImagePolicyPinned = "pinned"
	ImagePolicyFollow = "follow"
)

// imageWaitRetry is how often an operand waiting for its turn to move to
// the operator's image looks again.
const imageWaitRetry = 5 * time.Second

// ValidateImagePolicy checks an --operand-image-policy value ("" is
// pinned).
func ValidateImagePolicy(p string) error {
	switch p {
	case "", ImagePolicyPinned, ImagePolicyFollow:
		return nil
	}
	return fmt.Errorf("operand image policy %q: use %q (operands keep their image until their spec.image changes) or %q (they move to the operator's image one at a time)", p, ImagePolicyPinned, ImagePolicyFollow)
}

// ImageGate chooses operand images and, under follow, lets one operand at
// a time move to the operator's image. Both controllers share one.
type ImageGate struct {
	policy string
	mu     sync.Mutex
	// holder is the operand moving now ("" when none).
	holder string
}

// NewImageGate returns the gate of a policy (checked by ValidateImagePolicy).
func NewImageGate(policy string) *ImageGate {
	if policy == "" {
		policy = ImagePolicyPinned
	}
	return &ImageGate{policy: policy}
}

// operandChoice is the image an operand runs now, and whether it waits
// for its turn to move to the operator's image.
type operandChoice struct {
	image string
	wait  bool
}

// recorded is the status.image after this choice: old when no choice was
// made (the reconcile failed before it).
func (c operandChoice) recorded(old string) string {
	if c.image == "" {
		return old
	}
	return c.image
}

// requeue makes an operand waiting for its turn look again soon.
func (c operandChoice) requeue(r ctrl.Result) ctrl.Result {
	if c.wait && (r.RequeueAfter == 0 || r.RequeueAfter > imageWaitRetry) {
		r.RequeueAfter = imageWaitRetry
	}
	return r
}

// Kinds of operands, for their gate ids.
const (
	masterKind = "ReplicationMaster"
	workerKind = "ReplicationWorker"
)

// Choose returns the image of one operand: id names it (kind/namespace/
// name), specImage and recorded are its spec.image and status.image, sts
// its StatefulSet, target the operator's image.
func (g *ImageGate) Choose(ctx context.Context, c client.Reader, id string, specImage, recorded string, sts types.NamespacedName, target string) (operandChoice, error) {
	if specImage != "" {
		g.release(id)
		return operandChoice{image: specImage}, nil
	}
	var live *appsv1.StatefulSet
	var s appsv1.StatefulSet
	switch err := c.Get(ctx, sts, &s); {
	case err == nil:
		live = &s
	case !apierrors.IsNotFound(err):
		return operandChoice{}, fmt.Errorf("get StatefulSet %s to learn the image it runs: %w", sts, err)
	}
	current := recorded
	if current == "" {
		// An operand made by an operator that recorded no image runs
		// what its StatefulSet says; a new one takes the operator's.
		current = runningImage(live)
	}
	if current == "" {
		current = target
	}
	if g == nil || g.policy != ImagePolicyFollow {
		return operandChoice{image: current}, nil
	}
	if current == target {
		// Moved (or new): it holds the turn until it is ready again.
		if rolledOut(live, target) {
			g.release(id)
		} else {
			g.acquire(id)
		}
		return operandChoice{image: current}, nil
	}
	if g.acquire(id) {
		return operandChoice{image: target}, nil
	}
	return operandChoice{image: current, wait: true}, nil
}

// Forget releases the turn of an operand that is gone.
func (g *ImageGate) Forget(id string) { g.release(id) }

func (g *ImageGate) acquire(id string) bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holder == "" || g.holder == id {
		g.holder = id
		return true
	}
	return false
}

func (g *ImageGate) release(id string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holder == id {
		g.holder = ""
	}
}

// operandID names an operand for the gate.
func operandID(kind string, key types.NamespacedName) string { return kind + "/" + key.String() }

// runningImage is the image of a StatefulSet's first container.
func runningImage(sts *appsv1.StatefulSet) string {
	if sts == nil || len(sts.Spec.Template.Spec.Containers) == 0 {
		return ""
	}
	return sts.Spec.Template.Spec.Containers[0].Image
}

// rolledOut reports whether every pod of the StatefulSet runs image and is
// ready.
func rolledOut(sts *appsv1.StatefulSet, image string) bool {
	if sts == nil || runningImage(sts) != image {
		return false
	}
	if rolling, _ := statefulSetRolling(sts); rolling {
		return false
	}
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	return sts.Status.ReadyReplicas >= want && sts.Status.UpdatedReplicas >= want
}
