package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// The master's status shows its log id; a new id (the log was replaced)
// turns Degraded to LogReset and leaves a Warning Event naming both ids,
// even when the probe reporting it never saw the old log.
func TestMasterStatusLogIDAndLogReset(t *testing.T) {
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
	key := client.ObjectKeyFromObject(m)
	// Nothing announces the fake's snapshots; an annotation change wakes
	// the master's controller.
	poke := func(logID string, warnings ...string) {
		t.Helper()
		fp.setSnapshot(key, probe.Snapshot{MeasuredAt: time.Now(), Reachable: true, LogID: logID, Warnings: warnings})
		var live replv1.ReplicationMaster
		if err := updateRetrying(ctx, key, &live, func() {
			live.Annotations = map[string]string{"test/poke": logID + fmt.Sprint(len(warnings))}
		}); err != nil {
			t.Fatal(err)
		}
	}
	status := func() (replv1.ReplicationMasterStatus, error) {
		var live replv1.ReplicationMaster
		err := k8s.Get(ctx, key, &live)
		return live.Status, err
	}

	poke("log-a")
	eventually(t, waitFor, "status.logId log-a", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if st.LogID != "log-a" {
			return fmt.Errorf("logId %q", st.LogID)
		}
		if c := meta.FindStatusCondition(st.Conditions, replv1.ConditionDegraded); c == nil || c.Reason == replv1.ReasonLogReset {
			return fmt.Errorf("Degraded %+v: the first log id is no reset", c)
		}
		return nil
	})
	if err := hasEvent(ctx, ns, "ReplicationMaster", "m", corev1.EventTypeWarning, replv1.ReasonLogReset); err == nil {
		t.Error("a LogReset event for the first log id seen")
	}

	// A new probe (the master pod moved) reports another id and no
	// warning of its own: the status's old id is what tells.
	poke("log-b")
	eventually(t, waitFor, "LogReset event naming both ids", func() error {
		if err := hasEvent(ctx, ns, "ReplicationMaster", "m", corev1.EventTypeWarning, replv1.ReasonLogReset); err != nil {
			return err
		}
		st, err := status()
		if err != nil {
			return err
		}
		if st.LogID != "log-b" {
			return fmt.Errorf("logId %q", st.LogID)
		}
		return nil
	})

	// While the probe warns that the log was reset, Degraded says so.
	const warning = "master log reset: stream caches went back from 9 to 2"
	poke("log-b", warning)
	eventually(t, waitFor, "Degraded LogReset from the probe's warning", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if err := conditionIs(st.Conditions, replv1.ConditionDegraded, "True", replv1.ReasonLogReset); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(st.Conditions, replv1.ConditionDegraded); !strings.Contains(c.Message, warning) {
			return fmt.Errorf("Degraded message %q lacks the probe's warning", c.Message)
		}
		return nil
	})
	// A probe without the warning (it restarted) clears it.
	poke("log-b")
	eventually(t, waitFor, "Degraded cleared", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		return conditionIs(st.Conditions, replv1.ConditionDegraded, "False", replv1.ReasonAsExpected)
	})
}
