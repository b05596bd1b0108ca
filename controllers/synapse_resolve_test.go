package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

// TestSynapseResolveCached: the references are read once per resync for a
// generation, again after it or for a new generation; a transient API error
// is not remembered.
func TestSynapseResolveCached(t *testing.T) {
	gets := 0
	var failNext error
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "redis"}, Data: map[string][]byte{"password": []byte("pw")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "hs"}, Data: map[string]string{"homeserver.yaml": "stream_writers: {events: [a, b]}"}},
	).WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		gets++
		if failNext != nil {
			err := failNext
			failNext = nil
			return err
		}
		return cl.Get(ctx, key, obj, opts...)
	}}).Build()
	r := &SynapseReplicationReconciler{APIReader: c, ParseStreamWriters: synapse.ParseStreamWriters, Resync: time.Minute,
		resolved: map[types.NamespacedName]resolvedTarget{}}
	sr := testSynapseReplication()
	sr.Namespace = "ns"
	sr.Spec.Redis.PasswordSecretRef = &replv1.SecretKeyRef{Name: "redis", Key: "password"}
	sr.Spec.HomeserverConfigRef = &replv1.ConfigKeyRef{Name: "hs", Key: "homeserver.yaml"}
	ctx := context.Background()

	steps := []struct {
		at       time.Duration
		gen      int64
		fail     error
		wantGets int
		wantErr  string
	}{
		{0, 3, nil, 2, ""},
		{30 * time.Second, 3, nil, 2, ""}, // cached
		{61 * time.Second, 3, nil, 4, ""}, // resync passed
		{62 * time.Second, 4, nil, 6, ""}, // new generation
		{200 * time.Second, 4, errors.New("etcd leader changed"), 7, "etcd leader changed"},
		{201 * time.Second, 4, nil, 9, ""}, // the transient error was not kept
	}
	for i, s := range steps {
		sr.Generation = s.gen
		failNext = s.fail
		tgt, err := r.resolveCached(ctx, sr, statusNow.Add(s.at))
		if s.wantErr == "" && (err != nil || tgt.Password != "pw" || len(tgt.StreamWriters["events"]) != 2) {
			t.Errorf("step %d: target %+v, err %v", i, tgt, err)
		}
		if s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Errorf("step %d: err %v, want %q", i, err, s.wantErr)
		}
		if gets != s.wantGets {
			t.Errorf("step %d: %d GETs so far, want %d", i, gets, s.wantGets)
		}
	}
}
