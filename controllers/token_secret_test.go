package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// TestReconcileTokenSecret covers the publish-token Secret: created once,
// kept afterwards, and every way it can be unusable reported as an error
// that says what to do, with no token handed to the master.
func TestReconcileTokenSecret(t *testing.T) {
	t.Parallel()
	scheme := NewScheme()
	m := newMaster()
	secret := func(owned bool, data map[string][]byte) *corev1.Secret {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: specs.MasterTokenSecretName(m), Namespace: m.Namespace},
			Data:       data,
		}
		if owned {
			if err := controllerutil.SetControllerReference(m, s, scheme); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	errEtcd := errors.New("etcdserver: request timed out")
	tests := map[string]struct {
		existing  *corev1.Secret
		getErr    error
		wantToken string // "" with wantErr; "generated" for a new token
		wantErr   []string
		wantIs    error
	}{
		"created when missing": {
			wantToken: "generated",
		},
		"an existing token is kept": {
			existing:  secret(true, map[string][]byte{specs.PublishTokenKey: []byte("producers-hold-this")}),
			wantToken: "producers-hold-this",
		},
		"a Secret without the token key": {
			existing: secret(true, map[string][]byte{"other": []byte("x")}),
			wantErr:  []string{`has no "token" key`, "delete it"},
		},
		"a Secret with an empty token": {
			existing: secret(true, map[string][]byte{specs.PublishTokenKey: {}}),
			wantErr:  []string{`has no "token" key`},
		},
		"a Secret the master does not own": {
			existing: secret(false, map[string][]byte{specs.PublishTokenKey: []byte("someone-elses")}),
			wantErr:  []string{"is not controlled by ReplicationMaster m1", "delete or rename it"},
		},
		"the Get fails": {
			getErr:  errEtcd,
			wantErr: []string{"get Secret ns/m1-publish-token"},
			wantIs:  errEtcd,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := fake.NewClientBuilder().WithScheme(scheme)
			if tc.existing != nil {
				b = b.WithObjects(tc.existing.DeepCopy())
			}
			if tc.getErr != nil {
				b = b.WithInterceptorFuncs(interceptor.Funcs{
					Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						return tc.getErr
					},
				})
			}
			c := b.Build()
			r := &ReplicationMasterReconciler{ReconcilerBase: ReconcilerBase{Client: c, Scheme: scheme}}
			tok, err := r.reconcileTokenSecret(context.Background(), m)

			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, token %q", tok)
				}
				if tok != "" {
					t.Errorf("token %q returned with the error", tok)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("error %q does not wrap %q", err, tc.wantIs)
				}
				if tc.existing != nil {
					// Someone's Secret is never overwritten.
					var live corev1.Secret
					if err := c.Get(context.Background(), client.ObjectKeyFromObject(tc.existing), &live); err != nil {
						t.Fatal(err)
					}
					if string(live.Data[specs.PublishTokenKey]) != string(tc.existing.Data[specs.PublishTokenKey]) || len(live.Data) != len(tc.existing.Data) {
						t.Errorf("the Secret was changed: %v", live.Data)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var live corev1.Secret
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: m.Namespace, Name: specs.MasterTokenSecretName(m)}, &live); err != nil {
				t.Fatalf("the Secret: %v", err)
			}
			if got := string(live.Data[specs.PublishTokenKey]); got != tok {
				t.Errorf("returned token %q, Secret holds %q", tok, got)
			}
			if !metav1.IsControlledBy(&live, m) {
				t.Error("the Secret is not controlled by the master, so it would outlive it")
			}
			switch tc.wantToken {
			case "generated":
				if len(tok) != 64 {
					t.Errorf("generated token %q, want 64 hex characters (32 random bytes)", tok)
				}
			default:
				if tok != tc.wantToken {
					t.Errorf("token %q, want %q", tok, tc.wantToken)
				}
			}
		})
	}
}
