package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// staleCache makes Get miss every object, as an informer cache that has not
// caught up does.
var staleCache = interceptor.Funcs{
	Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, key.Name)
	},
}

func TestApplyOwned(t *testing.T) {
	t.Parallel()
	scheme := NewScheme()
	m := newMaster()
	desired := func() *corev1.ConfigMap {
		cm, err := specs.BuildMasterConfigMap(m)
		if err != nil {
			t.Fatal(err)
		}
		return cm
	}
	owned := func(mut func(*corev1.ConfigMap)) *corev1.ConfigMap {
		cm := desired()
		if err := controllerutil.SetControllerReference(m, cm, scheme); err != nil {
			t.Fatal(err)
		}
		mut(cm)
		return cm
	}
	hash, err := specHash(desired())
	if err != nil {
		t.Fatal(err)
	}
	withHash := func(cm *corev1.ConfigMap) { cm.Annotations = map[string]string{specs.AnnotationSpecHash: hash} }

	tests := map[string]struct {
		existing []client.Object
		cached   bool // false: the cache misses everything
		reader   bool
		want     applyOutcome
		wantErr  string
		isCache  bool
	}{
		"created":                 {cached: true, want: outcomeCreated},
		"unchanged":               {existing: []client.Object{owned(withHash)}, cached: true, want: outcomeUnchanged},
		"updated when spec moved": {existing: []client.Object{owned(func(cm *corev1.ConfigMap) { cm.Annotations = map[string]string{specs.AnnotationSpecHash: "old"} })}, cached: true, want: outcomeUpdated},
		"restored after hand edit": {existing: []client.Object{owned(func(cm *corev1.ConfigMap) {
			withHash(cm)
			cm.Data[specs.MasterConfigFile] = "edited"
		})}, cached: true, want: outcomeRestored},
		"someone else's object":       {existing: []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "m1-config", Namespace: "ns"}}}, cached: true, wantErr: "is not controlled by ReplicationMaster m1"},
		"cache behind our own object": {existing: []client.Object{owned(withHash)}, reader: true, wantErr: "cache is behind", isCache: true},
		"unlabeled object the cache cannot see": {
			existing: []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "m1-config", Namespace: "ns"}}}, reader: true,
			wantErr: "is not controlled by ReplicationMaster m1",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tc.existing...)
			reader := b.Build()
			var c client.Client = reader
			if !tc.cached {
				c = fake.NewClientBuilder().WithScheme(scheme).WithObjects(tc.existing...).WithInterceptorFuncs(staleCache).Build()
			}
			var r client.Reader
			if tc.reader {
				r = reader
			}
			got, out, err := applyOwned(context.Background(), c, r, scheme, m, desired(), configMapState)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if isTransient(err) != tc.isCache {
					t.Errorf("isTransient = %v", isTransient(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Fatalf("outcome = %s, want %s", out, tc.want)
			}
			if got.GetName() != "m1-config" || got.GetResourceVersion() == "" {
				t.Errorf("returned object %s at resourceVersion %q", got.GetName(), got.GetResourceVersion())
			}
			var live corev1.ConfigMap
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(desired()), &live); err != nil {
				t.Fatal(err)
			}
			if live.Data[specs.MasterConfigFile] != desired().Data[specs.MasterConfigFile] || live.Annotations[specs.AnnotationSpecHash] != hash || !metav1.IsControlledBy(&live, m) {
				t.Errorf("live = %+v", live)
			}
		})
	}
}

func TestIsTransient(t *testing.T) {
	t.Parallel()
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "statefulsets"}, "m1", errors.New("modified"))
	for err, want := range map[error]bool{
		conflict:                     true,
		errCacheBehind:               true,
		errors.New("forbidden"):      false,
		apierrors.NewBadRequest("x"): false,
	} {
		if got := isTransient(err); got != want {
			t.Errorf("isTransient(%v) = %v", err, got)
		}
	}
}
