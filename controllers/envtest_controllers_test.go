package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
)

const waitFor = 20 * time.Second

func get(ctx context.Context, ns, name string, obj client.Object) error {
	return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj)
}

func controlledBy(obj, owner client.Object) error {
	if !metav1.IsControlledBy(obj, owner) {
		return fmt.Errorf("%s is not controlled by %s (owners %+v)", obj.GetName(), owner.GetName(), obj.GetOwnerReferences())
	}
	return nil
}

func conditionIs(conds []metav1.Condition, typ, status, reason string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, conds)
	}
	if string(c.Status) != status || c.Reason != reason {
		return fmt.Errorf("%s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

func TestMasterOwnedObjectsCreatedUpdatedOwned(t *testing.T) {
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

	// Every owned object exists and is controlled by the master.
	owned := map[string]client.Object{
		"m1-config":        &corev1.ConfigMap{},
		"m1-publish-token": &corev1.Secret{},
		"m1":               &corev1.Service{},
		"m1-headless":      &corev1.Service{},
		"m1-sts":           &appsv1.StatefulSet{},
		"m1-netpol":        &networkingv1.NetworkPolicy{},
	}
	for label, obj := range owned {
		name := strings.TrimSuffix(strings.TrimSuffix(label, "-sts"), "-netpol")
		eventually(t, waitFor, "owned "+label, func() error {
			if err := get(ctx, ns, name, obj); err != nil {
				return err
			}
			return controlledBy(obj, m)
		})
	}

	eventually(t, waitFor, "Created event", func() error {
		return hasEvent(ctx, ns, "ReplicationMaster", "m1", corev1.EventTypeNormal, "Created")
	})

	var secret corev1.Secret
	if err := get(ctx, ns, "m1-publish-token", &secret); err != nil {
		t.Fatal(err)
	}
	if len(secret.Data[specs.PublishTokenKey]) != 64 {
		t.Errorf("publish token has %d characters, want 64 hex", len(secret.Data[specs.PublishTokenKey]))
	}

	// Status: endpoint, token secret name, conditions, observedGeneration.
	eventually(t, waitFor, "master status", func() error {
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, key, &live); err != nil {
			return err
		}
		st := live.Status
		if st.Endpoint != "m1."+ns+".svc:9092" || st.PublishTokenSecret != "m1-publish-token" || st.ObservedGeneration != live.Generation {
			return fmt.Errorf("status = %+v", st)
		}
		return conditionIs(st.Conditions, replv1.ConditionReady, "False", replv1.ReasonPodNotReady)
	})
	// The probe was started, at the Service until the pod has an IP.
	eventually(t, waitFor, "probe target", func() error {
		tg, ok := fp.target(key)
		if !ok || tg.Address != "m1."+ns+".svc:9092" || tg.ServerName != "matrix.example.org" {
			return fmt.Errorf("target = %+v (%v)", tg, ok)
		}
		return nil
	})

	var sts appsv1.StatefulSet
	if err := get(ctx, ns, "m1", &sts); err != nil {
		t.Fatal(err)
	}
	hash := sts.Spec.Template.Annotations[specs.AnnotationConfigHash]

	// A spec change rewrites the ConfigMap and rolls the pod template.
	var live replv1.ReplicationMaster
	if err := updateRetrying(ctx, key, &live, func() {
		live.Spec.Streams.Custom = []replv1.CustomStream{{Name: "audit_log"}}
		live.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "config map updated", func() error {
		var cm corev1.ConfigMap
		if err := get(ctx, ns, "m1-config", &cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data[specs.MasterConfigFile], "audit_log") {
			return fmt.Errorf("config = %s", cm.Data[specs.MasterConfigFile])
		}
		return nil
	})
	eventually(t, waitFor, "StatefulSet rolled", func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx, ns, "m1", &sts); err != nil {
			return err
		}
		if sts.Spec.Template.Annotations[specs.AnnotationConfigHash] == hash {
			return fmt.Errorf("config hash unchanged: %s", hash)
		}
		if got := sts.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().String(); got != "512Mi" {
			return fmt.Errorf("memory limit = %s", got)
		}
		return nil
	})

	// Someone edits the StatefulSet by hand: the operator puts its own
	// fields back, and leaves a `kubectl rollout restart` alone.
	eventually(t, waitFor, "hand edit", func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx, ns, "m1", &sts); err != nil {
			return err
		}
		sts.Spec.Template.Spec.Containers[0].Image = "evil:1"
		sts.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = "2026-11-26T20:00:00Z"
		return k8s.Update(ctx, &sts)
	})
	eventually(t, waitFor, "hand edit reverted", func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx, ns, "m1", &sts); err != nil {
			return err
		}
		if img := sts.Spec.Template.Spec.Containers[0].Image; img != testOpts.DefaultImage {
			return fmt.Errorf("image = %s", img)
		}
		if sts.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] == "" {
			return fmt.Errorf("the restart annotation was dropped")
		}
		return nil
	})

	// The Service keeps the cluster IP the API server allocated across
	// updates.
	var svc corev1.Service
	if err := get(ctx, ns, "m1", &svc); err != nil {
		t.Fatal(err)
	}
	clusterIP := svc.Spec.ClusterIP

	// Turning the NetworkPolicy off deletes it.
	if err := updateRetrying(ctx, key, &live, func() {
		live.Spec.NetworkPolicy.Enabled = ptr.To(false)
		live.Spec.HTTPPort = 9100
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "NetworkPolicy deleted", func() error {
		err := get(ctx, ns, "m1", &networkingv1.NetworkPolicy{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (err %w)", err)
	})
	eventually(t, waitFor, "Service port updated, cluster IP kept", func() error {
		if err := get(ctx, ns, "m1", &svc); err != nil {
			return err
		}
		if svc.Spec.Ports[1].Port != 9100 || svc.Spec.ClusterIP != clusterIP {
			return fmt.Errorf("ports %+v clusterIP %s (was %s)", svc.Spec.Ports, svc.Spec.ClusterIP, clusterIP)
		}
		return nil
	})

	// The master pod gets an IP: the probe follows it. Then the
	// annotations override it.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "m1-0", Namespace: ns, Labels: specs.MasterLabels(&live)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "master", Image: "x"}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP = "10.1.2.3"
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "probe follows the pod IP", func() error {
		if tg, _ := fp.target(key); tg.Address != "10.1.2.3:9092" || tg.HTTPURL != "http://10.1.2.3:9100" {
			return fmt.Errorf("target = %+v", tg)
		}
		return nil
	})
	if err := updateRetrying(ctx, key, &live, func() {
		live.Annotations = map[string]string{specs.AnnotationProbeAddress: "127.0.0.1:1234", specs.AnnotationProbeHTTPURL: "http://127.0.0.1:1235"}
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "probe override", func() error {
		if tg, _ := fp.target(key); tg.Address != "127.0.0.1:1234" || tg.HTTPURL != "http://127.0.0.1:1235" {
			return fmt.Errorf("target = %+v", tg)
		}
		return nil
	})

	// Deleting the master stops its probe (envtest runs no garbage
	// collector; ownership above is what lets the real one delete the rest).
	if err := k8s.Delete(ctx, &live); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "probe stopped", func() error {
		if _, running := fp.target(key); running || fp.stops(key) == 0 {
			return fmt.Errorf("probe still running")
		}
		return nil
	})
}

func TestMasterReportsObjectItDoesNotOwn(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	// A ConfigMap of the same name that someone else made.
	squatter := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "m2-config", Namespace: ns, Labels: map[string]string{specs.LabelManagedBy: specs.ManagedBy}}}
	if err := k8s.Create(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	m := minimalMaster(ns, "m2")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "Degraded ReconcileFailed", func() error {
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), &live); err != nil {
			return err
		}
		if err := conditionIs(live.Status.Conditions, replv1.ConditionDegraded, "True", replv1.ReasonReconcileFailed); err != nil {
			return err
		}
		if msg := meta.FindStatusCondition(live.Status.Conditions, replv1.ConditionDegraded).Message; !strings.Contains(msg, "not controlled by ReplicationMaster m2") {
			return fmt.Errorf("message = %q", msg)
		}
		if live.Status.ObservedGeneration != 0 {
			return fmt.Errorf("observedGeneration %d set on failure", live.Status.ObservedGeneration)
		}
		return nil
	})
	// Removing the squatter lets the next retry succeed.
	if err := k8s.Delete(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "recovers", func() error {
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), &live); err != nil {
			return err
		}
		return conditionIs(live.Status.Conditions, replv1.ConditionDegraded, "False", replv1.ReasonAsExpected)
	})
}

func TestWorkerMasterNotFoundThenFound(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	w := minimalWorker(ns, "w1", "m3")
	w.Spec.Replicas = ptr.To[int32](2)
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "MasterNotFound", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(w), &live); err != nil {
			return err
		}
		return conditionIs(live.Status.Conditions, replv1.ConditionReady, "False", replv1.ReasonMasterNotFound)
	})
	if err := get(ctx, ns, "w1", &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a StatefulSet exists without a master (err %v)", err)
	}
	eventually(t, waitFor, "MasterNotFound event", func() error {
		return hasEvent(ctx, ns, "ReplicationWorker", "w1", corev1.EventTypeWarning, replv1.ReasonMasterNotFound)
	})

	m := minimalMaster(ns, "m3")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	var d appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet once the master exists", func() error {
		if err := get(ctx, ns, "w1", &d); err != nil {
			return err
		}
		return controlledBy(&d, w)
	})
	c := d.Spec.Template.Spec.Containers[0]
	if e := env(c, specs.EnvMasterAddress); e == nil || e.Value != "m3."+ns+".svc:9092" {
		t.Errorf("%s = %+v", specs.EnvMasterAddress, e)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d", *d.Spec.Replicas)
	}
	eventually(t, waitFor, "MasterNotFound cleared", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(w), &live); err != nil {
			return err
		}
		if live.Status.ObservedGeneration != live.Generation {
			return fmt.Errorf("observedGeneration %d", live.Status.ObservedGeneration)
		}
		return conditionIs(live.Status.Conditions, replv1.ConditionReady, "False", replv1.ReasonReplicasNotReady)
	})

	// A spec change reaches the StatefulSet.
	var live replv1.ReplicationWorker
	if err := updateRetrying(ctx, client.ObjectKeyFromObject(w), &live, func() {
		live.Spec.Replicas = ptr.To[int32](3)
		live.Spec.Streams = []string{"events"}
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "StatefulSet updated", func() error {
		if err := get(ctx, ns, "w1", &d); err != nil {
			return err
		}
		if *d.Spec.Replicas != 3 || d.Spec.Template.Spec.Containers[0].Args[1] != "--streams=events" {
			return fmt.Errorf("replicas %d args %v", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Args)
		}
		return nil
	})
}

func TestWorkerStatusFromProbeSnapshot(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	m := minimalMaster(ns, "m4")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	w := minimalWorker(ns, "w4", "m4")
	w.Spec.Replicas = ptr.To[int32](2)
	w.Spec.MaxLagSeconds = 5
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	var d appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, "w4", &d) })

	// Stand in for the kubelet and the StatefulSet controller.
	for i, ip := range []string{"10.0.0.11", "10.0.0.12"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("w4-abc-%d", i), Namespace: ns, Labels: d.Spec.Template.Labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "x"}}},
		}
		if err := k8s.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pod.Status.PodIP = ip
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := k8s.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	d.Status.Replicas, d.Status.ReadyReplicas = 2, 2
	if err := k8s.Status().Update(ctx, &d); err != nil {
		t.Fatal(err)
	}

	// Pod 0 is connected by name, pod 1 not at all.
	snap := probe.Snapshot{
		MeasuredAt: time.Now(), Reachable: true, ConnectionsAvailable: true,
		Connections: []probe.Connection{{Name: "w4-abc-0", RemoteAddr: "10.0.0.11:5000", Since: time.Now(),
			Streams: []probe.ConnectionStream{{Name: "events", Token: 10, TokensBehind: 2, SecondsBehind: 0.5}}}},
	}
	fp.setSnapshot(client.ObjectKeyFromObject(m), snap)
	// Nothing announces the fake's snapshots; a pod change wakes the worker.
	touchPods(t, ns, "w4-abc-0")

	wkey := client.ObjectKeyFromObject(w)
	eventually(t, waitFor, "one pod connected", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, wkey, &live); err != nil {
			return err
		}
		st := live.Status
		// The worst first: the pod that is not connected.
		if st.Ready != "2/2" || st.Connected != "1/2" || len(st.Pods) != 2 || st.Pods[0].Name != "w4-abc-1" || st.Pods[0].Connected || !st.Pods[1].Connected {
			return fmt.Errorf("status = %+v", st)
		}
		if len(st.Pods[1].Streams) != 1 || st.Pods[1].Streams[0].Token != 10 || st.Pods[1].Streams[0].SecondsBehind != "0.500" || st.MaxLag != "500ms" {
			return fmt.Errorf("positions = %+v maxLag %s", st.Pods[1].Streams, st.MaxLag)
		}
		if err := conditionIs(st.Conditions, replv1.ConditionConnected, "False", replv1.ReasonNotConnected); err != nil {
			return err
		}
		// A pod without a connection is not known to keep up.
		return conditionIs(st.Conditions, replv1.ConditionLagging, "Unknown", replv1.ReasonLagUnknown)
	})

	// Pod 1 connects by IP under another name, and is far behind.
	snap.Connections = append(snap.Connections, probe.Connection{Name: "synapse.app.generic_worker", RemoteAddr: "10.0.0.12:6000", Since: time.Now(),
		Streams: []probe.ConnectionStream{{Name: "events", Token: 3, TokensBehind: 9, SecondsBehind: 42}}})
	fp.setSnapshot(client.ObjectKeyFromObject(m), snap)
	touchPods(t, ns, "w4-abc-1")
	eventually(t, waitFor, "both connected, lagging", func() error {
		var live replv1.ReplicationWorker
		if err := k8s.Get(ctx, wkey, &live); err != nil {
			return err
		}
		st := live.Status
		if st.Connected != "2/2" || st.MaxLag != "42s" || st.MaxTokensBehind != 9 {
			return fmt.Errorf("status = %+v", st)
		}
		if err := conditionIs(st.Conditions, replv1.ConditionConnected, "True", replv1.ReasonAllConnected); err != nil {
			return err
		}
		return conditionIs(st.Conditions, replv1.ConditionLagging, "True", replv1.ReasonLagAboveThreshold)
	})
}

// hasEvent finds an events.k8s.io Event about the object.
func hasEvent(ctx context.Context, ns, kind, name, eventType, reason string) error {
	var list eventsv1.EventList
	if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Kind == kind && e.Regarding.Name == name && e.Type == eventType && e.Reason == reason {
			return nil
		}
		seen = append(seen, e.Regarding.Kind+"/"+e.Regarding.Name+" "+e.Type+" "+e.Reason)
	}
	return fmt.Errorf("no %s %s event for %s %s; events: %v", eventType, reason, kind, name, seen)
}

// touchPods changes a label on pods so that the worker controller, which
// watches them, reconciles.
func touchPods(t *testing.T, ns string, names ...string) {
	t.Helper()
	for _, n := range names {
		var p corev1.Pod
		if err := get(context.Background(), ns, n, &p); err != nil {
			t.Fatal(err)
		}
		p.Annotations = map[string]string{"touched": time.Now().String()}
		if err := k8s.Update(context.Background(), &p); err != nil {
			t.Fatal(err)
		}
	}
}

// env finds a container's environment variable by name.
func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}
