package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// emit records an Event when a recorder is configured.
func emit(rec events.EventRecorder, obj runtime.Object, eventType, reason, action, note string) {
	emitRelated(rec, obj, nil, eventType, reason, action, note)
}

// emitRelated records an Event about obj that names a second object,
// related (nil for none).
func emitRelated(rec events.EventRecorder, obj, related runtime.Object, eventType, reason, action, note string) {
	if rec == nil {
		return
	}
	// Notes are limited to 1 KiB by the Events API.
	if len(note) > 1000 {
		note = note[:1000]
	}
	rec.Eventf(obj, related, eventType, reason, action, "%s", note)
}

// startingReasons are the Ready reasons every resource passes through
// while it starts.
var startingReasons = map[string]bool{
	replv1.ReasonPodNotReady:      true,
	replv1.ReasonProbePending:     true,
	replv1.ReasonReplicasNotReady: true,
}

// emitReadyChange records an Event when the Ready condition changes status
// or reason: these are the moments a user wants in `kubectl describe`.
func emitReadyChange(rec events.EventRecorder, obj runtime.Object, before, after []metav1.Condition) {
	b := meta.FindStatusCondition(before, replv1.ConditionReady)
	a := meta.FindStatusCondition(after, replv1.ConditionReady)
	if a == nil || (b != nil && b.Status == a.Status && b.Reason == a.Reason) {
		return
	}
	// A new resource is not ready at first; saying so as a Warning for
	// every resource created would bury the warnings that matter.
	if b == nil && startingReasons[a.Reason] {
		return
	}
	t := corev1.EventTypeNormal
	if a.Status != metav1.ConditionTrue {
		t = corev1.EventTypeWarning
	}
	emit(rec, obj, t, a.Reason, "Observe", a.Message)
}
