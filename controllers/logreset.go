package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// withLogIdentity adds the master's log id to a status MasterStatus
// computed, and turns Degraded to LogReset when the log was replaced: the
// id differs from the one in the status before (what a new probe, which
// never saw the old log, cannot tell by itself), or the probe saw a token
// go back. A Degraded condition that already names another problem wins.
// Like MasterStatus it is pure.
func withLogIdentity(old replv1.ReplicationMasterStatus, st replv1.ReplicationMasterStatus, snap probe.Snapshot, haveSnap bool, gen int64) replv1.ReplicationMasterStatus {
	if !haveSnap || snap.LogID == "" {
		return st
	}
	st.LogID = snap.LogID
	msg := ""
	switch {
	case old.LogID != "" && old.LogID != snap.LogID:
		msg = fmt.Sprintf("the master serves a new log: its log id changed from %s to %s", old.LogID, snap.LogID)
	case len(snap.Warnings) > 0:
		msg = strings.Join(snap.Warnings, "; ")
	default:
		return st
	}
	msg += "; rows workers had not read from the old log are gone, and tokens started again: workers resync or stop as their spec.onLogChange says"
	if c := meta.FindStatusCondition(st.Conditions, replv1.ConditionDegraded); c != nil && c.Status == metav1.ConditionTrue && c.Reason != replv1.ReasonLogReset {
		return st
	}
	st.Conditions = append([]metav1.Condition(nil), st.Conditions...)
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: replv1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: replv1.ReasonLogReset, Message: msg, ObservedGeneration: gen})
	return st
}

// emitLogReset records a Warning Event when a written status carries
// another log id than the one before.
func emitLogReset(rec events.EventRecorder, m *replv1.ReplicationMaster, before, after string) {
	if before == "" || after == "" || before == after {
		return
	}
	emit(rec, m, corev1.EventTypeWarning, replv1.ReasonLogReset, "Observe",
		fmt.Sprintf("the master's log id changed from %s to %s: its log was replaced (an ephemeral master restarted, or its volume is new); rows workers had not read are gone", before, after))
}
