package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

// homeserverYAML is a homeserver config with two event writers and a
// quarantined_media writer (the #20080 shape).
const homeserverYAML = `server_name: example.com
redis:
  enabled: true
stream_writers:
  events:
    - event_persister1
    - event_persister2
  quarantined_media_changes: media1
`

func minimalSynapseReplication(ns, name string) *replv1.SynapseReplication {
	return &replv1.SynapseReplication{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: replv1.SynapseReplicationSpec{
			ServerName: "example.com",
			Redis:      replv1.SynapseRedisSpec{Address: "redis.matrix.svc:6379"},
		},
	}
}

func TestSynapseReplicationValidation(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	dur := func(s string) *metav1.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return &metav1.Duration{Duration: d}
	}
	tests := map[string]struct {
		mutate func(*replv1.SynapseReplication)
		want   string // "" = accepted
	}{
		"minimal":       {func(*replv1.SynapseReplication) {}, ""},
		"solicit never": {func(s *replv1.SynapseReplication) { s.Spec.SolicitInterval = dur("0s") }, ""},
		"solicit 10s":   {func(s *replv1.SynapseReplication) { s.Spec.SolicitInterval = dur("10s") }, ""},
		"solicit 5s": {func(s *replv1.SynapseReplication) { s.Spec.SolicitInterval = dur("5s") },
			"solicitInterval must be 0s (solicit only on connect) or at least 10s"},
		"address without port":     {func(s *replv1.SynapseReplication) { s.Spec.Redis.Address = "redis" }, "spec.redis.address"},
		"server name with a slash": {func(s *replv1.SynapseReplication) { s.Spec.ServerName = "example.com/USER_IP" }, "spec.serverName"},
		"username without password": {func(s *replv1.SynapseReplication) { s.Spec.Redis.Username = "synapse" },
			"redis.username needs redis.passwordSecretRef"},
		"username with password": {func(s *replv1.SynapseReplication) {
			s.Spec.Redis.Username = "synapse"
			s.Spec.Redis.PasswordSecretRef = &replv1.SecretKeyRef{Name: "redis", Key: "password"}
		}, ""},
		"CA without TLS": {func(s *replv1.SynapseReplication) {
			s.Spec.Redis.TLS = &replv1.SynapseRedisTLS{CARef: &replv1.ConfigKeyRef{Name: "ca", Key: "ca.crt"}}
		}, "redis.tls.caRef and redis.tls.serverName need redis.tls.enabled: true"},
		"TLS with a CA Secret": {func(s *replv1.SynapseReplication) {
			s.Spec.Redis.TLS = &replv1.SynapseRedisTLS{Enabled: true, CARef: &replv1.ConfigKeyRef{Kind: "Secret", Name: "ca", Key: "ca.crt"}}
		}, ""},
		"config ref of another kind": {func(s *replv1.SynapseReplication) {
			s.Spec.HomeserverConfigRef = &replv1.ConfigKeyRef{Kind: "Pod", Name: "x", Key: "y"}
		}, "spec.homeserverConfigRef.kind"},
		"negative db": {func(s *replv1.SynapseReplication) { s.Spec.Redis.DB = -1 }, "spec.redis.db"},
	}
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			sr := minimalSynapseReplication(ns, fmt.Sprintf("v%d", i))
			tc.mutate(sr)
			err := k8s.Create(ctx, sr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			expectInvalid(t, err, tc.want)
		})
	}

	// Defaults as the API server applies them.
	var live replv1.SynapseReplication
	sr := minimalSynapseReplication(ns, "defaults")
	if err := k8s.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(sr), &live); err != nil {
		t.Fatal(err)
	}
	if live.Spec.SolicitInterval == nil || live.Spec.SolicitInterval.Duration != time.Minute {
		t.Errorf("solicitInterval defaults to %v, want 1m", live.Spec.SolicitInterval)
	}
}

func TestSynapseReplicationPrinterColumns(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	if err := k8s.Create(ctx, minimalSynapseReplication(ns, "cols")); err != nil {
		t.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(testCfg)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/apis/replication.tcprepl.io/v1alpha1/namespaces/%s/synapsereplications", strings.TrimSuffix(testCfg.Host, "/"), ns)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("HTTP %d: %v: %.300s", resp.StatusCode, err, body)
	}
	var got []string
	for _, c := range table.ColumnDefinitions {
		got = append(got, c.Name)
	}
	if want := "Name,Server,Ready,Streams,Writers,Missing,Age"; strings.Join(got, ",") != want {
		t.Errorf("columns = %v, want %s", got, want)
	}
}

func startSynapseOperator(t *testing.T, factory SynapseWatcherFactory, parse StreamWritersParser) string {
	t.Helper()
	ns := newNamespace(t)
	startOperator(t, ns, OperatorOptions{
		Observer: newFakeProbes(), ProbeController: newFakeProbes(),
		Synapse: SynapseOptions{
			NewWatcher: factory, ParseStreamWriters: parse,
			Resync: 300 * time.Millisecond, PollInterval: 50 * time.Millisecond,
		},
	})
	return ns
}

func getSynapseReplication(t *testing.T, ns, name string) replv1.SynapseReplication {
	t.Helper()
	var sr replv1.SynapseReplication
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &sr); err != nil {
		t.Fatal(err)
	}
	return sr
}

func srConditionIs(sr replv1.SynapseReplication, typ, status, reason string) error {
	c := meta.FindStatusCondition(sr.Status.Conditions, typ)
	if c == nil {
		return fmt.Errorf("no %s condition", typ)
	}
	if string(c.Status) != status || c.Reason != reason {
		return fmt.Errorf("%s=%s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

func TestSynapseReplicationController(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	factory := &fakeWatcherFactory{}
	ns := startSynapseOperator(t, factory.make, synapse.ParseStreamWriters)

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis"}, Data: map[string][]byte{"password": []byte("s3cret")}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ess-synapse"}, Data: map[string]string{"04-homeserver-overrides.yaml": homeserverYAML}}
	for _, o := range []client.Object{secret, cm} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	sr := minimalSynapseReplication(ns, "matrix")
	sr.Spec.Redis.PasswordSecretRef = &replv1.SecretKeyRef{Name: "redis", Key: "password"}
	sr.Spec.Redis.DB = 2
	sr.Spec.HomeserverConfigRef = &replv1.ConfigKeyRef{Name: "ess-synapse", Key: "04-homeserver-overrides.yaml"}
	if err := k8s.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}

	// The watcher is made from the spec, the Secret and the ConfigMap.
	eventually(t, 20*time.Second, "a watcher for the resource", func() error {
		if factory.last() == nil {
			return fmt.Errorf("no watcher made")
		}
		return nil
	})
	w := factory.last()
	tgt := w.target
	if tgt.Addr != "redis.matrix.svc:6379" || tgt.Password != "s3cret" || tgt.DB != 2 || tgt.ServerName != "example.com" || tgt.SolicitInterval != time.Minute {
		t.Errorf("target = %+v", tgt)
	}
	for stream, want := range map[string]string{
		"events": "[event_persister1 event_persister2]", "backfill": "[event_persister1 event_persister2]",
		"quarantined_media": "[media1]", "typing": "[master]",
	} {
		if got := fmt.Sprint(tgt.StreamWriters[stream]); got != want {
			t.Errorf("stream writers of %s = %s, want %s", stream, got, want)
		}
	}
	eventually(t, 20*time.Second, "Ready False WatcherPending before the watcher connects", func() error {
		return srConditionIs(getSynapseReplication(t, ns, "matrix"), replv1.ConditionReady, "False", replv1.ReasonWatcherPending)
	})

	// The watcher subscribes and hears two event writers; media1 never
	// announces.
	snap := healthySnapshot()
	snap.Streams = append(snap.Streams, synapse.Stream{Name: "quarantined_media", Writers: []synapse.Writer{{Instance: "media1", Configured: true}}})
	snap.MissingWriters = []synapse.WriterRef{{Stream: "quarantined_media", Instance: "media1"}}
	w.set(snap)
	eventually(t, 20*time.Second, "status shows the missing writer", func() error {
		got := getSynapseReplication(t, ns, "matrix")
		if err := srConditionIs(got, replv1.ConditionReady, "True", replv1.ReasonSubscribed); err != nil {
			return err
		}
		if err := srConditionIs(got, replv1.ConditionWritersHealthy, "False", replv1.ReasonMissingWriter); err != nil {
			return err
		}
		st := got.Status
		if st.MissingWriterCount != 1 || len(st.MissingWriters) != 1 || st.MissingWriters[0].Instance != "media1" || st.StreamCount != 3 || st.WriterCount != 3 {
			return fmt.Errorf("status = missing %d %v, streams %d, writers %d", st.MissingWriterCount, st.MissingWriters, st.StreamCount, st.WriterCount)
		}
		if st.ObservedGeneration != got.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", st.ObservedGeneration, got.Generation)
		}
		return nil
	})
	eventually(t, 20*time.Second, "a Warning event for the missing writer", func() error {
		return expectEvent(ctx, ns, "matrix", replv1.ReasonMissingWriter)
	})

	// A new password in the Secret restarts the watcher (found by resync:
	// the operator does not watch the user's Secrets).
	secret.Data["password"] = []byte("rotated")
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a watcher with the new password", func() error {
		if p := factory.last().target.Password; p != "rotated" {
			return fmt.Errorf("password %q", p)
		}
		return nil
	})
	pollUntil(t, "the old watcher ends", func() bool { return !w.isRunning() })

	// The ConfigMap goes: a clear reason, the watcher stops, no error loop.
	if err := k8s.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "Ready False ConfigMapNotFound", func() error {
		got := getSynapseReplication(t, ns, "matrix")
		if err := srConditionIs(got, replv1.ConditionReady, "False", replv1.ReasonConfigMapNotFound); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, replv1.ConditionReady); !strings.Contains(c.Message, "ess-synapse") {
			return fmt.Errorf("message does not name the ConfigMap: %s", c.Message)
		}
		return nil
	})
	last := factory.last()
	pollUntil(t, "the watcher stops while the ConfigMap is missing", func() bool { return !last.isRunning() })

	// It comes back with YAML that does not parse.
	cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ess-synapse"}, Data: map[string]string{"04-homeserver-overrides.yaml": "stream_writers: [unclosed"}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "Ready False InvalidHomeserverConfig", func() error {
		return srConditionIs(getSynapseReplication(t, ns, "matrix"), replv1.ConditionReady, "False", replv1.ReasonInvalidHomeserverConfig)
	})

	// Fixed: watching again.
	cm.Data["04-homeserver-overrides.yaml"] = homeserverYAML
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a running watcher again", func() error {
		if w := factory.last(); w == last || !w.isRunning() {
			return fmt.Errorf("no new running watcher")
		}
		return nil
	})
	final := factory.last()

	// Deleting the resource stops its watcher.
	if err := k8s.Delete(ctx, sr); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the watcher stops when the resource is deleted", func() bool { return !final.isRunning() })
}

func TestSynapseReplicationMissingSecret(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	factory := &fakeWatcherFactory{}
	ns := startSynapseOperator(t, factory.make, synapse.ParseStreamWriters)
	sr := minimalSynapseReplication(ns, "nosecret")
	sr.Spec.Redis.PasswordSecretRef = &replv1.SecretKeyRef{Name: "absent", Key: "password"}
	if err := k8s.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "Ready False SecretNotFound", func() error {
		return srConditionIs(getSynapseReplication(t, ns, "nosecret"), replv1.ConditionReady, "False", replv1.ReasonSecretNotFound)
	})
	// The key, not only the Secret, must exist.
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "absent"}, Data: map[string][]byte{"other": []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the message names the missing key", func() error {
		got := getSynapseReplication(t, ns, "nosecret")
		c := meta.FindStatusCondition(got.Status.Conditions, replv1.ConditionReady)
		if c == nil || c.Reason != replv1.ReasonSecretNotFound || !strings.Contains(c.Message, `no key "password"`) {
			return fmt.Errorf("Ready = %+v", c)
		}
		return nil
	})
	if len(factory.all()) != 0 {
		t.Errorf("%d watchers made without a password", len(factory.all()))
	}
}

// expectEvent finds an Event about the resource with reason.
func expectEvent(ctx context.Context, ns, name, reason string) error {
	var list eventsv1.EventList
	if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			return nil
		}
	}
	return fmt.Errorf("no %s event among %d", reason, len(list.Items))
}
