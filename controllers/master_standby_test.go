package controllers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// masterPod is a master pod in one of the states the kubelet reports.
func masterPod(name string, running, ready bool, rev string) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{appsv1.ControllerRevisionHashLabelKey: rev}}}
	cs := corev1.ContainerStatus{Name: "master", Started: ptr.To(running), Ready: ready}
	if running {
		p.Status.Phase = corev1.PodRunning
		cs.State.Running = &corev1.ContainerStateRunning{}
	} else {
		p.Status.Phase = corev1.PodPending
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	return p
}

func deleting(p corev1.Pod) corev1.Pod {
	p.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	return p
}

func TestActiveMaster(t *testing.T) {
	tests := map[string]struct {
		pods         []corev1.Pod
		previous     string
		wantActive   string
		wantStandbys int32
	}{
		"no pods":                   {},
		"one ready":                 {pods: []corev1.Pod{masterPod("m-0", true, true, "a")}, wantActive: "m-0"},
		"active and two standbys":   {pods: []corev1.Pod{masterPod("m-0", true, false, "a"), masterPod("m-1", true, true, "a"), masterPod("m-2", true, false, "a")}, wantActive: "m-1", wantStandbys: 2},
		"standby not started":       {pods: []corev1.Pod{masterPod("m-0", true, true, "a"), masterPod("m-1", false, false, "a")}, wantActive: "m-0"},
		"none ready":                {pods: []corev1.Pod{masterPod("m-0", false, false, "a"), masterPod("m-1", true, false, "a")}, wantStandbys: 1},
		"two ready keeps previous":  {pods: []corev1.Pod{masterPod("m-0", true, true, "a"), masterPod("m-1", true, true, "a")}, previous: "m-1", wantActive: "m-1", wantStandbys: 1},
		"two ready, previous gone":  {pods: []corev1.Pod{masterPod("m-0", true, true, "a"), masterPod("m-1", true, true, "a")}, previous: "m-2", wantActive: "m-0", wantStandbys: 1},
		"deleting pod is not taken": {pods: []corev1.Pod{deleting(masterPod("m-0", true, true, "a")), masterPod("m-1", true, false, "a")}, previous: "m-0", wantStandbys: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			active, standbys := activeMaster(tc.pods, tc.previous)
			if active != tc.wantActive || standbys != tc.wantStandbys {
				t.Errorf("activeMaster = %q, %d; want %q, %d", active, standbys, tc.wantActive, tc.wantStandbys)
			}
		})
	}
}

func TestActiveMemoryTakeovers(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	now := time.Unix(1000, 0)
	steps := []struct {
		status, active string
		wantFrom       string // "" for no takeover
	}{
		{status: "", active: "", wantFrom: ""},
		{status: "", active: "m-0", wantFrom: ""}, // first start
		{status: "m-0", active: "m-0", wantFrom: ""},
		{status: "m-0", active: "", wantFrom: ""}, // m-0 died
		{status: "", active: "m-1", wantFrom: "m-0"},
		{status: "m-1", active: "m-1", wantFrom: ""},
		{status: "m-1", active: "m-0", wantFrom: "m-1"}, // straight switch
	}
	var a activeMemory
	for i, s := range steps {
		got := a.observe(key, s.status, s.active, now)
		switch {
		case s.wantFrom == "" && got != nil:
			t.Errorf("step %d: takeover %+v, want none", i, got)
		case s.wantFrom != "" && (got == nil || got.from != s.wantFrom || got.to != s.active || !got.at.Equal(now)):
			t.Errorf("step %d: takeover %+v, want from %s to %s", i, got, s.wantFrom, s.active)
		}
	}

	// An operator that restarted knows the active pod from the status.
	var fresh activeMemory
	if got := fresh.observe(key, "m-0", "m-1", now); got == nil || got.from != "m-0" {
		t.Errorf("after a restart: takeover %+v, want from m-0", got)
	}
	fresh.forget(key)
	if got := fresh.observe(key, "", "m-1", now); got != nil {
		t.Errorf("forgotten master: takeover %+v, want none", got)
	}
}

func TestNextMasterPodToRoll(t *testing.T) {
	sts := func(strategy appsv1.StatefulSetUpdateStrategyType) *appsv1.StatefulSet {
		s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Generation: 2}}
		s.Spec.UpdateStrategy.Type = strategy
		s.Status.ObservedGeneration = 2
		s.Status.UpdateRevision = "new"
		return s
	}
	onDelete := sts(appsv1.OnDeleteStatefulSetStrategyType)
	stale := sts(appsv1.OnDeleteStatefulSetStrategyType)
	stale.Status.ObservedGeneration = 1
	tests := map[string]struct {
		sts    *appsv1.StatefulSet
		pods   []corev1.Pod
		active string
		// replicas defaults to len(pods).
		replicas int32
		want     string
	}{
		"rolling update strategy is the controller's": {sts: sts(appsv1.RollingUpdateStatefulSetStrategyType), pods: []corev1.Pod{masterPod("m-0", true, true, "old")}, active: "m-0"},
		"nothing outdated":                            {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "new"), masterPod("m-1", true, false, "new")}, active: "m-0"},
		"standby first":                               {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "old"), masterPod("m-1", true, false, "old")}, active: "m-0", want: "m-1"},
		"active once an updated standby runs":         {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "old"), masterPod("m-1", true, false, "new")}, active: "m-0", want: "m-0"},
		"wait for the replacement to run":             {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "old"), masterPod("m-1", false, false, "new"), masterPod("m-2", true, false, "old")}, active: "m-0"},
		"one at a time":                               {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "old"), deleting(masterPod("m-1", true, false, "old")), masterPod("m-2", true, false, "old")}, active: "m-0"},
		"single pod rolls":                            {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "old")}, active: "m-0", want: "m-0"},
		"template not yet observed":                   {sts: stale, pods: []corev1.Pod{masterPod("m-0", true, true, "old"), masterPod("m-1", true, false, "old")}, active: "m-0"},
		"a pod not yet recreated":                     {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", true, true, "old")}, active: "m-0", replicas: 2},
		"no active: outdated pods go":                 {sts: onDelete, pods: []corev1.Pod{masterPod("m-0", false, false, "old"), masterPod("m-1", true, false, "old")}, want: "m-0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			replicas := tc.replicas
			if replicas == 0 {
				replicas = int32(len(tc.pods))
			}
			got := nextMasterPodToRoll(tc.sts, tc.pods, tc.active, replicas)
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tc.want {
				t.Errorf("next = %q, want %q", name, tc.want)
			}
		})
	}
}

func TestSetStandbyStatusTakeoverReason(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	takeoverCond := metav1.Condition{Type: replv1.ConditionAvailable, Status: metav1.ConditionTrue, Reason: replv1.ReasonTakeover, Message: "before"}
	tests := map[string]struct {
		old        replv1.ReplicationMasterStatus
		obs        masterObservation
		available  bool
		wantReason string
		wantTime   bool
	}{
		"takeover":                   {obs: masterObservation{activePod: "m-1", takeover: &masterTakeover{from: "m-0", to: "m-1", at: at}}, available: true, wantReason: replv1.ReasonTakeover, wantTime: true},
		"same active keeps reason":   {old: replv1.ReplicationMasterStatus{ActivePod: "m-1", Conditions: []metav1.Condition{takeoverCond}}, obs: masterObservation{activePod: "m-1"}, available: true, wantReason: replv1.ReasonTakeover},
		"first start":                {obs: masterObservation{activePod: "m-0"}, available: true, wantReason: replv1.ReasonPodReady},
		"other active drops reason":  {old: replv1.ReplicationMasterStatus{ActivePod: "m-1", Conditions: []metav1.Condition{takeoverCond}}, obs: masterObservation{activePod: "m-0"}, available: true, wantReason: replv1.ReasonPodReady},
		"not available: no takeover": {obs: masterObservation{}, wantReason: replv1.ReasonPodReady},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := *tc.old.DeepCopy()
			set := func(typ string, s metav1.ConditionStatus, reason, msg string) {
				meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg})
			}
			set(replv1.ConditionAvailable, metav1.ConditionTrue, replv1.ReasonPodReady, "ready")
			setStandbyStatus(&st, tc.old, tc.obs, tc.available, set)
			if c := meta.FindStatusCondition(st.Conditions, replv1.ConditionAvailable); c.Reason != tc.wantReason {
				t.Errorf("Available reason %s, want %s", c.Reason, tc.wantReason)
			}
			if got := st.LastTakeoverTime != nil; got != tc.wantTime {
				t.Errorf("lastTakeoverTime %v, want set: %v", st.LastTakeoverTime, tc.wantTime)
			}
			if tc.wantTime && !st.LastTakeoverTime.Time.Equal(at.Truncate(time.Second)) {
				t.Errorf("lastTakeoverTime %v, want %v", st.LastTakeoverTime, at.Truncate(time.Second))
			}
			if st.ActivePod != tc.obs.activePod {
				t.Errorf("activePod %q, want %q", st.ActivePod, tc.obs.activePod)
			}
		})
	}
}
