/*
Copyright 2026 The tcprepl Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/tcprepl/tcprepl/internal/replication/streams"
)

// StandardStreams are the streams of the 2020 Synapse replication protocol,
// in the order docs/protocol.md lists them (internal/replication/streams owns
// the list). A custom stream may not reuse one of these names; the CEL rule
// on CustomStream repeats this list, so keep the two in step.
var StandardStreams = streams.Standard()

// PodTemplateOverrides are the parts of the generated pod template a user may
// set. Everything else (command, ports, probes, security context) is owned by
// the operator so that the pod keeps working.
type PodTemplateOverrides struct {
	// Labels are added to the pod's labels. The operator's own labels win on
	// conflict, because selectors and network policies depend on them.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations are added to the pod's annotations (for example
	// prometheus.io/scrape). The operator's config-hash annotation wins.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// NodeSelector constrains the pod to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations let the pod schedule onto tainted nodes.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity holds node and pod (anti-)affinity rules.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// PriorityClassName is the pod's priority class.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// ServiceAccountName runs the pod as this service account. Empty means
	// the namespace's default service account; the pod does not need API
	// access, so its token is never mounted.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// ImagePullSecrets are used to pull the image from a private registry.
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}
