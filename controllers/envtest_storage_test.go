package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// TestMasterStorageGrows grows spec.storage.size and checks that the
// operator expands the claim the StatefulSet made when the storage class
// allows it, and says why in status when it does not.
func TestMasterStorageGrows(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	tests := map[string]struct {
		allowExpansion bool
		wantSize       string
		wantDegraded   string
	}{
		"class allows expansion":  {allowExpansion: true, wantSize: "2Gi"},
		"class refuses expansion": {wantSize: "1Gi", wantDegraded: "allowVolumeExpansion"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			class := &storagev1.StorageClass{
				ObjectMeta:           metav1.ObjectMeta{GenerateName: "tcprepl-test-"},
				Provisioner:          "example.com/test",
				AllowVolumeExpansion: ptr.To(tc.allowExpansion),
			}
			if err := k8s.Create(ctx, class); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = k8s.Delete(context.Background(), class) })
			m := minimalMaster(ns, "grow-"+map[bool]string{true: "yes", false: "no"}[tc.allowExpansion])
			m.Spec.Storage.StorageClassName = ptr.To(class.Name)
			if err := k8s.Create(ctx, m); err != nil {
				t.Fatal(err)
			}
			var sts appsv1.StatefulSet
			eventually(t, waitFor, "StatefulSet", func() error { return get(ctx, ns, m.Name, &sts) })

			// What the StatefulSet controller (absent from envtest) and a
			// provisioner would do: create the pod's claim from the
			// template and bind it.
			tmpl := sts.Spec.VolumeClaimTemplates[0]
			pvc := &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Name: tmpl.Name + "-" + m.Name + "-0", Namespace: ns},
				Spec:       *tmpl.Spec.DeepCopy(),
			}
			if err := k8s.Create(ctx, pvc); err != nil {
				t.Fatal(err)
			}
			pvc.Status.Phase = corev1.ClaimBound
			pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
			if err := k8s.Status().Update(ctx, pvc); err != nil {
				t.Fatal(err)
			}

			var live replv1.ReplicationMaster
			if err := updateRetrying(ctx, client.ObjectKeyFromObject(m), &live, func() {
				live.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
			}); err != nil {
				t.Fatal(err)
			}
			if tc.wantDegraded != "" {
				eventually(t, waitFor, "Degraded naming the storage class", func() error {
					if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), &live); err != nil {
						return err
					}
					for _, c := range live.Status.Conditions {
						if c.Type == replv1.ConditionDegraded && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, tc.wantDegraded) {
							return nil
						}
					}
					return fmt.Errorf("conditions %+v", live.Status.Conditions)
				})
			}
			eventually(t, waitFor, "claim size", func() error {
				if err := get(ctx, ns, pvc.Name, pvc); err != nil {
					return err
				}
				if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse(tc.wantSize)) != 0 {
					return fmt.Errorf("claim requests %s, want %s", got.String(), tc.wantSize)
				}
				return nil
			})
			if tc.wantDegraded == "" {
				eventually(t, waitFor, "Expanding event", func() error {
					return hasEvent(ctx, ns, "ReplicationMaster", m.Name, corev1.EventTypeNormal, "Expanding")
				})
			}
		})
	}
}
