package controllers

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// postgresMaster is a master on PostgreSQL through a URI Secret.
func postgresMaster(ns, name, secret string, replicas int32) *replv1.ReplicationMaster {
	return &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: replv1.ReplicationMasterSpec{
			ServerName: "matrix.example.org",
			Replicas:   ptr.To(replicas),
			Storage: replv1.StorageSpec{Postgres: &replv1.PostgresStorage{
				URISecretRef: &replv1.SecretKeyRef{Name: secret, Key: "uri"},
			}},
		},
	}
}

// TestAPIServerPostgresStorageRules: the CEL rules of spec.replicas and
// spec.storage.postgres, on create and on update.
func TestAPIServerPostgresStorageRules(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	creates := map[string]struct {
		m       *replv1.ReplicationMaster
		wantErr string
	}{
		"secret ref, 3 replicas": {m: postgresMaster(ns, "ok-secret", "pg", 3)},
		"cnpg cluster, 2 replicas": {m: func() *replv1.ReplicationMaster {
			m := postgresMaster(ns, "ok-cnpg", "", 2)
			m.Spec.Storage.Postgres = &replv1.PostgresStorage{Cluster: "synapse-db"}
			return m
		}()},
		"both secret and cluster": {m: func() *replv1.ReplicationMaster {
			m := postgresMaster(ns, "both", "pg", 1)
			m.Spec.Storage.Postgres.Cluster = "synapse-db"
			return m
		}(), wantErr: "exactly one of uriSecretRef"},
		"neither secret nor cluster": {m: func() *replv1.ReplicationMaster {
			m := postgresMaster(ns, "neither", "pg", 1)
			m.Spec.Storage.Postgres = &replv1.PostgresStorage{}
			return m
		}(), wantErr: "exactly one of uriSecretRef"},
		"replicas above 1 on a volume": {m: func() *replv1.ReplicationMaster {
			m := minimalMaster(ns, "pebble-two")
			m.Spec.Replicas = ptr.To[int32](2)
			return m
		}(), wantErr: "replicas above 1 needs storage.postgres"},
		"replicas above 5": {m: postgresMaster(ns, "six", "pg", 6), wantErr: "spec.replicas"},
		"replicas 0":       {m: postgresMaster(ns, "zero", "pg", 0), wantErr: "spec.replicas"},
		"postgres with a volume size": {m: func() *replv1.ReplicationMaster {
			m := postgresMaster(ns, "with-size", "pg", 1)
			m.Spec.Storage.Size = ptr.To(resource.MustParse("1Gi"))
			return m
		}(), wantErr: "the master has no volume"},
		"postgres and ephemeral": {m: func() *replv1.ReplicationMaster {
			m := postgresMaster(ns, "with-ephemeral", "pg", 1)
			m.Spec.Storage.Ephemeral = true
			return m
		}(), wantErr: "the master has no volume"},
	}
	for name, tc := range creates {
		t.Run("create/"+name, func(t *testing.T) {
			err := k8s.Create(ctx, tc.m)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}

	var created replv1.ReplicationMaster
	if err := get(ctx, ns, "ok-secret", &created); err != nil {
		t.Fatal(err)
	}
	if created.Spec.Storage.Size != nil || created.Spec.Storage.Ephemeral {
		t.Errorf("a PostgreSQL master got volume defaults: %+v", created.Spec.Storage)
	}
	plain := minimalMaster(ns, "plain")
	if err := k8s.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(plain.Spec.Replicas, 0); got != 1 {
		t.Errorf("spec.replicas defaults to %d, want 1", got)
	}
	updates := map[string]struct {
		name    string
		mutate  func(*replv1.ReplicationMaster)
		wantErr string
	}{
		"volume master moved to postgres": {name: "plain", mutate: func(m *replv1.ReplicationMaster) {
			m.Spec.Storage = replv1.StorageSpec{Postgres: &replv1.PostgresStorage{Cluster: "db"}}
		}, wantErr: "storage.postgres cannot be added or removed"},
		"postgres master moved to a volume": {name: "ok-secret", mutate: func(m *replv1.ReplicationMaster) {
			m.Spec.Storage = replv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))}
		}, wantErr: "storage.postgres cannot be added or removed"},
		"postgres master scaled down to 1": {name: "ok-secret", mutate: func(m *replv1.ReplicationMaster) {
			m.Spec.Replicas = ptr.To[int32](1)
		}},
		"postgres master switched to a cluster": {name: "ok-secret", mutate: func(m *replv1.ReplicationMaster) {
			m.Spec.Storage.Postgres = &replv1.PostgresStorage{Cluster: "db"}
		}},
		"volume master scaled to 2": {name: "plain", mutate: func(m *replv1.ReplicationMaster) {
			m.Spec.Replicas = ptr.To[int32](2)
		}, wantErr: "replicas above 1 needs storage.postgres"},
	}
	for name, tc := range updates {
		t.Run("update/"+name, func(t *testing.T) {
			var m replv1.ReplicationMaster
			if err := get(ctx, ns, tc.name, &m); err != nil {
				t.Fatal(err)
			}
			tc.mutate(&m)
			err := k8s.Update(ctx, &m)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestMasterPostgresSecretReasons: a missing URI Secret, then a Secret
// without the key, are condition reasons and Events (the reconcile does
// not fail, the StatefulSet exists); once the key is there the condition
// clears and the pods get the URI through TCPREPL_POSTGRES_DSN. A
// CloudNativePG cluster name reads "<cluster>-app", key "uri".
func TestMasterPostgresSecretReasons(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	tests := map[string]struct {
		storage    replv1.PostgresStorage
		secretName string
		key        string
	}{
		"uri secret ref":     {storage: replv1.PostgresStorage{URISecretRef: &replv1.SecretKeyRef{Name: "pg-uri", Key: "dsn"}}, secretName: "pg-uri", key: "dsn"},
		"cloudnative-pg app": {storage: replv1.PostgresStorage{Cluster: "synapse-db"}, secretName: "synapse-db-app", key: "uri"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := postgresMaster(ns, "pg-"+strings.ReplaceAll(tc.secretName, "-", ""), "", 2)
			m.Spec.Storage.Postgres = &tc.storage
			if err := k8s.Create(ctx, m); err != nil {
				t.Fatal(err)
			}
			var sts appsv1.StatefulSet
			eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, m.Name, &sts) })
			readyReason := func(reason string) {
				t.Helper()
				eventually(t, waitFor, "Ready reason "+reason, func() error {
					var live replv1.ReplicationMaster
					if err := get(ctx, ns, m.Name, &live); err != nil {
						return err
					}
					if err := conditionIs(live.Status.Conditions, replv1.ConditionReady, "False", reason); err != nil {
						return err
					}
					return conditionIs(live.Status.Conditions, replv1.ConditionDegraded, "True", reason)
				})
				eventually(t, waitFor, "Warning event "+reason, func() error {
					return hasEvent(ctx, ns, "ReplicationMaster", m.Name, corev1.EventTypeWarning, reason)
				})
			}
			readyReason(replv1.ReasonPostgresSecretNotFound)

			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: tc.secretName, Namespace: ns},
				Data:       map[string][]byte{"other": []byte("x")},
			}
			if err := k8s.Create(ctx, secret); err != nil {
				t.Fatal(err)
			}
			readyReason(replv1.ReasonPostgresSecretKeyMissing)
			hashBefore := sts.Spec.Template.Annotations[specs.AnnotationConfigHash]

			secret.Data[tc.key] = []byte("postgresql://app:pw@db:5432/app")
			if err := k8s.Update(ctx, secret); err != nil {
				t.Fatal(err)
			}
			eventually(t, waitFor, "Degraded clears", func() error {
				var live replv1.ReplicationMaster
				if err := get(ctx, ns, m.Name, &live); err != nil {
					return err
				}
				return conditionIs(live.Status.Conditions, replv1.ConditionDegraded, "False", replv1.ReasonAsExpected)
			})
			eventually(t, waitFor, "config hash covers the URI", func() error {
				if err := get(ctx, ns, m.Name, &sts); err != nil {
					return err
				}
				if h := sts.Spec.Template.Annotations[specs.AnnotationConfigHash]; h == hashBefore {
					return fmt.Errorf("config hash still %s after the URI appeared", h)
				}
				return nil
			})
			c := sts.Spec.Template.Spec.Containers[0]
			e := env(c, masterapi.PostgresDSNEnv)
			if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != tc.secretName || e.ValueFrom.SecretKeyRef.Key != tc.key {
				t.Errorf("%s = %+v, want Secret %s key %s", masterapi.PostgresDSNEnv, e, tc.secretName, tc.key)
			}
			if got := ptr.Deref(sts.Spec.Replicas, 0); got != 2 {
				t.Errorf("StatefulSet replicas %d, want 2", got)
			}
			if len(sts.Spec.VolumeClaimTemplates) != 0 {
				t.Errorf("a master on PostgreSQL got claims %+v", sts.Spec.VolumeClaimTemplates)
			}
		})
	}
}

// setMasterPod creates or updates a master pod's status as the kubelet
// would: running (its master started) and ready or not. A pod it creates
// has the StatefulSet revision rev ("" for none), as the StatefulSet
// controller labels it.
func setMasterPod(t *testing.T, m *replv1.ReplicationMaster, name, rev string, running, ready bool) {
	t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	if err := get(ctx, m.Namespace, name, &pod); err != nil {
		labels := specs.MasterLabels(m)
		if rev != "" {
			labels[appsv1.ControllerRevisionHashLabelKey] = rev
		}
		pod = corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: m.Namespace, Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "master", Image: "x"}}},
		}
		if err := k8s.Create(ctx, &pod); err != nil {
			t.Fatal(err)
		}
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	pod.Status.Phase = corev1.PodPending
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "master", Image: "x", Ready: ready, Started: ptr.To(running)}}
	if running {
		pod.Status.Phase = corev1.PodRunning
		pod.Status.ContainerStatuses[0].State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
	} else {
		pod.Status.ContainerStatuses[0].State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
	}
	pod.Status.PodIP = "10.9.0." + name[len(name)-1:]
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	if err := k8s.Status().Update(ctx, &pod); err != nil {
		t.Fatal(err)
	}
}

// TestMasterTakeoverStatusAndEvent: with two master pods, the ready one is
// status.activePod and the other a ready standby; when the active pod dies
// and the standby becomes ready, the operator records the takeover (Event,
// Available reason Takeover, lastTakeoverTime), the probe follows the new
// pod and the standby metrics say no standby is left.
func TestMasterTakeoverStatusAndEvent(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pg", Namespace: ns},
		Data:       map[string][]byte{"uri": []byte("postgresql://app@db/app")},
	}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	m := postgresMaster(ns, "ha", "pg", 2)
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(m)
	var sts appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, m.Name, &sts) })

	status := func(what string, check func(replv1.ReplicationMasterStatus) error) {
		t.Helper()
		eventually(t, waitFor, what, func() error {
			var live replv1.ReplicationMaster
			if err := k8s.Get(ctx, key, &live); err != nil {
				return err
			}
			return check(live.Status)
		})
	}
	setMasterPod(t, m, "ha-0", "", true, true)
	setMasterPod(t, m, "ha-1", "", true, false)
	status("ha-0 active, one standby", func(st replv1.ReplicationMasterStatus) error {
		if st.ActivePod != "ha-0" || st.ReadyStandbys != 1 || st.LastTakeoverTime != nil {
			return fmt.Errorf("active %q, standbys %d, last takeover %v", st.ActivePod, st.ReadyStandbys, st.LastTakeoverTime)
		}
		return nil
	})
	if err := hasEvent(ctx, ns, "ReplicationMaster", m.Name, corev1.EventTypeNormal, replv1.ReasonTakeover); err == nil {
		t.Fatal("a Takeover event for the first active master")
	}
	if got := testutil.ToFloat64(masterReadyStandbys.WithLabelValues(ns, m.Name)); got != 1 {
		t.Errorf("ready standbys metric %v, want 1", got)
	}
	if got := testutil.ToFloat64(masterDesiredReplicas.WithLabelValues(ns, m.Name)); got != 2 {
		t.Errorf("desired replicas metric %v, want 2", got)
	}

	// ha-0's process is killed: for a moment no pod is ready.
	setMasterPod(t, m, "ha-0", "", false, false)
	status("no active pod", func(st replv1.ReplicationMasterStatus) error {
		if st.ActivePod != "" || st.ReadyStandbys != 1 {
			return fmt.Errorf("active %q, standbys %d", st.ActivePod, st.ReadyStandbys)
		}
		return nil
	})
	// ha-1 got the lock.
	setMasterPod(t, m, "ha-1", "", true, true)
	status("ha-1 took over", func(st replv1.ReplicationMasterStatus) error {
		if st.ActivePod != "ha-1" || st.ReadyStandbys != 0 || st.LastTakeoverTime == nil {
			return fmt.Errorf("active %q, standbys %d, last takeover %v", st.ActivePod, st.ReadyStandbys, st.LastTakeoverTime)
		}
		return conditionIs(st.Conditions, replv1.ConditionAvailable, "True", replv1.ReasonTakeover)
	})
	eventually(t, waitFor, "Takeover event", func() error {
		return hasEvent(ctx, ns, "ReplicationMaster", m.Name, corev1.EventTypeNormal, replv1.ReasonTakeover)
	})
	eventually(t, waitFor, "probe follows the active pod", func() error {
		if tg, _ := fp.target(key); !strings.HasPrefix(tg.Address, "10.9.0.1:") {
			return fmt.Errorf("target = %+v", tg)
		}
		return nil
	})
	if got := testutil.ToFloat64(masterReadyStandbys.WithLabelValues(ns, m.Name)); got != 0 {
		t.Errorf("ready standbys metric %v, want 0", got)
	}

	// ha-0 restarts as a standby: the takeover reason stays while ha-1 is
	// active.
	setMasterPod(t, m, "ha-0", "", true, false)
	status("ha-0 back as a standby", func(st replv1.ReplicationMasterStatus) error {
		if st.ActivePod != "ha-1" || st.ReadyStandbys != 1 {
			return fmt.Errorf("active %q, standbys %d", st.ActivePod, st.ReadyStandbys)
		}
		return conditionIs(st.Conditions, replv1.ConditionAvailable, "True", replv1.ReasonTakeover)
	})
}

// TestPostgresSampleIsAccepted: config/samples/replicationmaster_postgres.yaml
// (not in the kustomization, it needs a database) is valid, asks for a
// standby and names a CloudNativePG cluster.
func TestPostgresSampleIsAccepted(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	var m replv1.ReplicationMaster
	readYAML(t, filepath.Join("..", "config", "samples", "replicationmaster_postgres.yaml"), &m)
	m.Namespace = ns
	if err := k8s.Create(ctx, &m); err != nil {
		t.Fatalf("the API server refuses the sample: %v", err)
	}
	if specs.MasterReplicas(&m) < 2 {
		t.Errorf("the sample runs %d master, want a standby too", specs.MasterReplicas(&m))
	}
	if ref, ok := specs.PostgresURIRef(&m); !ok || ref.Key != "uri" || !strings.HasSuffix(ref.Name, "-app") {
		t.Errorf("the sample reads %+v, want a CloudNativePG <cluster>-app Secret", ref)
	}
}

// TestMasterRolloutStandbysFirst: a master on PostgreSQL has an OnDelete
// StatefulSet, and the operator replaces outdated pods itself: the standby
// first, then, once the updated standby runs, the active master.
func TestMasterRolloutStandbysFirst(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pg", Namespace: ns},
		Data:       map[string][]byte{"uri": []byte("postgresql://app@db/app")},
	}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	m := postgresMaster(ns, "roll", "pg", 2)
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, m.Name, &sts) })
	if sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		t.Fatalf("update strategy %s, want OnDelete", sts.Spec.UpdateStrategy.Type)
	}
	setMasterPod(t, m, "roll-0", "old", true, true)
	setMasterPod(t, m, "roll-1", "old", true, false)

	// What the StatefulSet controller reports after a template change.
	if err := get(ctx, ns, m.Name, &sts); err != nil {
		t.Fatal(err)
	}
	sts.Status.ObservedGeneration = sts.Generation
	sts.Status.Replicas = 2
	sts.Status.CurrentRevision, sts.Status.UpdateRevision = "old", "new"
	if err := k8s.Status().Update(ctx, &sts); err != nil {
		t.Fatal(err)
	}
	gone := func(name string) func() error {
		return func() error {
			var p corev1.Pod
			if err := get(ctx, ns, name, &p); err == nil {
				return fmt.Errorf("pod %s still exists", name)
			} else if !apierrors.IsNotFound(err) {
				return err
			}
			return nil
		}
	}
	eventually(t, waitFor, "the standby roll-1 deleted", gone("roll-1"))
	var active corev1.Pod
	if err := get(ctx, ns, "roll-0", &active); err != nil {
		t.Fatalf("the active master was deleted with the standby: %v", err)
	}

	// The StatefulSet controller recreates roll-1 from the new template;
	// until its master runs, the active one stays.
	setMasterPod(t, m, "roll-1", "new", false, false)
	touchPods(t, ns, "roll-0")
	if err := get(ctx, ns, "roll-0", &active); err != nil {
		t.Fatalf("the active master was deleted before the updated standby ran: %v", err)
	}
	setMasterPod(t, m, "roll-1", "new", true, false)
	eventually(t, waitFor, "the active roll-0 deleted once the updated standby runs", gone("roll-0"))
	eventually(t, waitFor, "Rolling event", func() error {
		return hasEvent(ctx, ns, "ReplicationMaster", m.Name, corev1.EventTypeNormal, "Rolling")
	})
}
