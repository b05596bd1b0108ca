package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// expandStorage grows the master's volume claim to spec.storage.size. A
// StatefulSet's claim template cannot change, so the claim itself is
// patched, as `kubectl patch pvc` would; the storage class must allow
// expansion, or the API server refuses and the error says so. The claim is
// read only while the size asked for is above the template's, so a master
// whose size never changed costs no extra reads.
func (r *ReplicationMasterReconciler) expandStorage(ctx context.Context, m *replv1.ReplicationMaster, sts *appsv1.StatefulSet) error {
	want := m.Spec.Storage.Size
	if m.Spec.Storage.Ephemeral || want == nil || len(sts.Spec.VolumeClaimTemplates) == 0 {
		return nil
	}
	tmpl := sts.Spec.VolumeClaimTemplates[0]
	if have, ok := tmpl.Spec.Resources.Requests[corev1.ResourceStorage]; ok && want.Cmp(have) <= 0 {
		return nil
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	key := types.NamespacedName{Namespace: m.Namespace, Name: tmpl.Name + "-" + specs.MasterPodName(m)}
	var pvc corev1.PersistentVolumeClaim
	switch err := reader.Get(ctx, key, &pvc); {
	case apierrors.IsNotFound(err):
		// The StatefulSet controller has not created it yet; when it
		// does, it uses the template's size, and the next reconcile grows it.
		return nil
	case err != nil:
		return fmt.Errorf("get PersistentVolumeClaim %s to expand it: %w", key, err)
	}
	if have, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; ok && want.Cmp(have) <= 0 {
		return nil
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	if pvc.Spec.Resources.Requests == nil {
		pvc.Spec.Resources.Requests = corev1.ResourceList{}
	}
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = *want
	if err := r.Patch(ctx, &pvc, patch); err != nil {
		return fmt.Errorf("expand PersistentVolumeClaim %s to %s (its storage class must set allowVolumeExpansion: true; spec.storage.size cannot shrink back): %w", key, want.String(), err)
	}
	emitRelated(r.Recorder, m, &pvc, corev1.EventTypeNormal, "Expanding", "Expand", fmt.Sprintf("PersistentVolumeClaim %s expanding to %s", pvc.Name, want.String()))
	return nil
}
