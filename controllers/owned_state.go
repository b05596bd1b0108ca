package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

var configMapState = ownedState[*corev1.ConfigMap]{
	fields: func(c *corev1.ConfigMap) any { return c.Data },
	mutate: func(live, want *corev1.ConfigMap) { live.Data = want.Data },
}

// serviceState keeps the cluster IPs the API server allocated.
var serviceState = ownedState[*corev1.Service]{
	fields: func(s *corev1.Service) any { return s.Spec },
	mutate: func(live, want *corev1.Service) {
		live.Spec.Ports = want.Spec.Ports
		live.Spec.Selector = want.Spec.Selector
		live.Spec.PublishNotReadyAddresses = want.Spec.PublishNotReadyAddresses
	},
}

// statefulSetState changes only what a StatefulSet lets change: the
// selector, service name and volume claim templates are immutable. The
// claim templates are left out of the comparison too: a grown
// spec.storage.size is applied to the claim (expandStorage), and the
// template, which keeps the size the master was created with, is not drift.
var statefulSetState = ownedState[*appsv1.StatefulSet]{
	fields: func(s *appsv1.StatefulSet) any {
		spec := s.Spec
		spec.VolumeClaimTemplates = nil
		return spec
	},
	mutate: func(live, want *appsv1.StatefulSet) {
		live.Spec.Replicas = want.Spec.Replicas
		live.Spec.Template = keepRestartAnnotation(live.Spec.Template, want.Spec.Template)
		live.Spec.UpdateStrategy = want.Spec.UpdateStrategy
		live.Spec.PersistentVolumeClaimRetentionPolicy = want.Spec.PersistentVolumeClaimRetentionPolicy
	},
}

var networkPolicyState = ownedState[*networkingv1.NetworkPolicy]{
	fields: func(n *networkingv1.NetworkPolicy) any { return n.Spec },
	mutate: func(live, want *networkingv1.NetworkPolicy) { live.Spec = want.Spec },
}

// keepRestartAnnotation returns want, carrying over the annotation
// `kubectl rollout restart` sets: dropping it would restart the pods again.
func keepRestartAnnotation(live, want corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	const restartedAt = "kubectl.kubernetes.io/restartedAt"
	if v, ok := live.Annotations[restartedAt]; ok {
		want = *want.DeepCopy()
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[restartedAt] = v
	}
	return want
}
