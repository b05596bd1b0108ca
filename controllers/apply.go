package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// applyOutcome says what applyOwned did, for logs and tests.
type applyOutcome string

const (
	outcomeCreated   applyOutcome = "created"
	outcomeUpdated   applyOutcome = "updated"
	outcomeRestored  applyOutcome = "restored"
	outcomeUnchanged applyOutcome = "unchanged"
)

// ownedState says how to compare and copy the operator-owned part of one
// kind of object.
type ownedState[T client.Object] struct {
	// fields returns the operator-owned part of an object. Compared with
	// equality.Semantic.DeepDerivative(desired, live), fields the operator
	// leaves unset (and the API server defaults) do not count as drift.
	fields func(T) any
	// mutate copies the owned part of want into live, leaving fields the
	// API server defaults or other controllers own (a Service's clusterIP,
	// a StatefulSet's immutable parts) alone.
	mutate func(live, want T)
}

// applyOwned makes the object named like desired match desired, owned by
// owner. It writes only when the desired state differs from what the
// operator last wrote (recorded as a hash annotation) or when someone
// changed an owned field of the live object (drift, which is put back), so
// a steady topology costs no API writes. An object of that name not
// controlled by owner is an error, never adopted: it may belong to someone
// else.
//
// It returns the object as the API server (or, when unchanged, the cache)
// has it, so callers need not read it back through a cache that may not
// have seen the write yet.
func applyOwned[T client.Object](ctx context.Context, c client.Client, reader client.Reader, scheme *runtime.Scheme, owner client.Object, desired T, st ownedState[T]) (T, applyOutcome, error) {
	var zero T
	hash, err := specHash(desired)
	if err != nil {
		return zero, "", err
	}
	kind := kindOf(scheme, desired)
	live, ok := desired.DeepCopyObject().(T)
	if !ok {
		return zero, "", fmt.Errorf("copy %s: unexpected type", kind)
	}
	err = c.Get(ctx, client.ObjectKeyFromObject(desired), live)
	switch {
	case apierrors.IsNotFound(err):
		setAnnotation(desired, specs.AnnotationSpecHash, hash)
		if err := controllerutil.SetControllerReference(owner, desired, scheme); err != nil {
			return zero, "", fmt.Errorf("set owner of %s %s: %w", kind, desired.GetName(), err)
		}
		if err := c.Create(ctx, desired); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return zero, "", alreadyExists(ctx, reader, scheme, owner, desired, kind)
			}
			return zero, "", fmt.Errorf("create %s %s/%s: %w", kind, desired.GetNamespace(), desired.GetName(), err)
		}
		return desired, outcomeCreated, nil
	case err != nil:
		return zero, "", fmt.Errorf("get %s %s/%s: %w", kind, desired.GetNamespace(), desired.GetName(), err)
	}
	if !metav1.IsControlledBy(live, owner) {
		return zero, "", fmt.Errorf("%s %s/%s exists and is not controlled by %s %s: delete or rename it so the operator can create its own", kind, live.GetNamespace(), live.GetName(), kindOf(scheme, owner), owner.GetName())
	}
	outcome := outcomeUpdated
	if live.GetAnnotations()[specs.AnnotationSpecHash] == hash {
		if equality.Semantic.DeepDerivative(st.fields(desired), st.fields(live)) {
			return live, outcomeUnchanged, nil
		}
		outcome = outcomeRestored
	}
	st.mutate(live, desired)
	labels := live.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, desired.GetLabels())
	live.SetLabels(labels)
	setAnnotation(live, specs.AnnotationSpecHash, hash)
	if err := c.Update(ctx, live); err != nil {
		return zero, "", fmt.Errorf("update %s %s/%s: %w", kind, live.GetNamespace(), live.GetName(), err)
	}
	return live, outcome, nil
}

// applyLogged is applyOwned plus a log line for every write.
func applyLogged[T client.Object](ctx context.Context, c client.Client, reader client.Reader, scheme *runtime.Scheme, rec events.EventRecorder, owner client.Object, obj T, st ownedState[T]) (T, error) {
	live, out, err := applyOwned(ctx, c, reader, scheme, owner, obj, st)
	if err != nil {
		return live, err
	}
	if out != outcomeUnchanged {
		kind := kindOf(scheme, obj)
		logf.FromContext(ctx).Info("owned object "+string(out), "kind", kind, "name", obj.GetName())
		reason := map[applyOutcome]string{outcomeCreated: "Created", outcomeUpdated: "Updated", outcomeRestored: "Restored"}[out]
		note := fmt.Sprintf("%s %s %s", kind, obj.GetName(), out)
		if out == outcomeRestored {
			note += ": it had been edited by hand; the resource's spec is the source of truth"
		}
		// The owned object is the event's related object: the events API
		// folds events that differ only in their note into one series, so
		// without it every "created" after the first was counted as a
		// repeat of the first ("ConfigMap ... created", twice).
		emitRelated(rec, owner, live, corev1.EventTypeNormal, reason, "Apply", note)
	}
	return live, nil
}

// errCacheBehind says the informer cache has not yet seen an object the
// operator itself wrote; the reconcile is retried without reporting a
// failure.
var errCacheBehind = errors.New("the operator's cache is behind the API server")

// alreadyExists explains a Create that found the object there although the
// cache did not show it: either the cache is behind (the operator created
// it a moment ago), or the object is someone else's and lacks the
// operator's label, so the cache never shows it.
func alreadyExists[T client.Object](ctx context.Context, reader client.Reader, scheme *runtime.Scheme, owner client.Object, desired T, kind string) error {
	if reader != nil {
		live, ok := desired.DeepCopyObject().(T)
		if ok && reader.Get(ctx, client.ObjectKeyFromObject(desired), live) == nil && metav1.IsControlledBy(live, owner) {
			return fmt.Errorf("create %s %s/%s: %w", kind, desired.GetNamespace(), desired.GetName(), errCacheBehind)
		}
	}
	return fmt.Errorf("%s %s/%s exists and is not controlled by %s %s: delete or rename it so the operator can create its own", kind, desired.GetNamespace(), desired.GetName(), kindOf(scheme, owner), owner.GetName())
}

// isTransient reports errors that a prompt retry fixes and that are not
// worth a Degraded condition: a stale cache, or an update that lost a race.
func isTransient(err error) bool {
	return errors.Is(err, errCacheBehind) || apierrors.IsConflict(err)
}

// kindOf names an object's kind for messages; typed objects read through a
// client carry no TypeMeta, so the scheme is asked.
func kindOf(scheme *runtime.Scheme, o runtime.Object) string {
	gvk, err := apiutil.GVKForObject(o, scheme)
	if err != nil {
		return fmt.Sprintf("%T", o)
	}
	return gvk.Kind
}

func setAnnotation(o client.Object, key, value string) {
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[key] = value
	o.SetAnnotations(a)
}

// specHash digests an object's desired state. Objects are built
// deterministically (encoding/json sorts map keys), so equal specs give
// equal hashes.
func specHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("hash desired object: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16], nil
}
