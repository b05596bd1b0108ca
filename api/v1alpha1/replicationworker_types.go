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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReplicationWorkerSpec is the desired state of a set of worker pods that
// replicate from one master.
// +kubebuilder:validation:XValidation:rule="!(has(self.command) && has(self.sink))",message="sink configures the reference worker; it cannot be combined with a custom command"
type ReplicationWorkerSpec struct {
	// MasterRef names the ReplicationMaster, in the same namespace, to
	// replicate from. The operator injects its address and server name into
	// the pods as TCPREPL_MASTER_ADDRESS and TCPREPL_SERVER_NAME.
	MasterRef MasterReference `json:"masterRef"`

	// Replicas is the number of worker pods.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Replicas *int32 `json:"replicas,omitempty"`

	// Image runs the worker; changing it rolls the worker. Empty means the
	// image in status.image, first the operator's own, which runs the
	// reference worker (`tcprepl worker`): a new operator image does not
	// restart the worker unless the operator runs with
	// --operand-image-policy=follow.
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the worker container.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Command replaces the reference worker with your own program. It reads
	// the master's address, server name and its worker name from the
	// TCPREPL_* environment the operator injects. Empty runs
	// `tcprepl worker`.
	// +optional
	// +listType=atomic
	Command []string `json:"command,omitempty"`

	// Args are passed to Command, or, for the reference worker, appended to
	// its flags.
	// +optional
	// +listType=atomic
	Args []string `json:"args,omitempty"`

	// Env is added to the container's environment after the TCPREPL_*
	// variables the operator injects.
	// +optional
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Streams the worker replicates: stream names, or ["ALL"] for every
	// stream the master publishes.
	// +optional
	// +kubebuilder:default={"ALL"}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +kubebuilder:validation:items:Pattern=`^(ALL|[a-z][a-z0-9_]*)$`
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="!('ALL' in self) || size(self) == 1",message="ALL cannot be combined with named streams"
	Streams []string `json:"streams,omitempty"`

	// Sink is where the reference worker hands rows: "stdout" (JSON lines),
	// "file:PATH" or "http:URL". Defaults to stdout. Not allowed with a
	// custom command.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^(stdout|file:/.+|http:https?://.+)$`
	Sink string `json:"sink,omitempty"`

	// MaxLagSeconds is the lag above which the Lagging condition turns
	// True: any stream of any pod more than this many seconds behind. At
	// least 1; unset means 30.
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	MaxLagSeconds int32 `json:"maxLagSeconds,omitempty"`

	// Resources of the worker container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// PodTemplate holds overrides for the worker pods.
	// +optional
	PodTemplate *PodTemplateOverrides `json:"podTemplate,omitempty"`

	// State is where each worker pod keeps its positions (and a file sink
	// under /var/lib/tcprepl-worker): by default a PersistentVolumeClaim
	// per pod, so a deleted pod resumes where it stopped. It cannot change
	// after creation: a StatefulSet's volume claim templates are immutable.
	// +optional
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="state is immutable: a StatefulSet's volume claims cannot change; create a new ReplicationWorker to change it"
	State WorkerStateSpec `json:"state,omitempty"`

	// OnLogChange is what the reference worker does when the master serves
	// another log than its saved positions belong to (the master's log was
	// wiped, e.g. an ephemeral master restarted): Stop (exit with an error
	// until restarted once with --resync) or Resync (replay the new log from
	// its start, without exiting). Empty means Resync when the master's
	// storage is ephemeral, Stop otherwise. Not used with a custom command.
	// +optional
	// +kubebuilder:validation:Enum=Stop;Resync
	OnLogChange LogChangePolicy `json:"onLogChange,omitempty"`

	// TLS is the worker pods' client certificate when the master has
	// spec.tls (docs/security.md). The pods dial the master over TLS whenever
	// the master has spec.tls, with or without this.
	// +optional
	TLS *WorkerTLSSpec `json:"tls,omitempty"`
}

// LogChangePolicy is what a worker does when the master's log changes.
type LogChangePolicy string

const (
	// LogChangeStop makes the worker exit with an error naming the change.
	LogChangeStop LogChangePolicy = "Stop"
	// LogChangeResync makes the worker drop its positions and replay the
	// new log from its start.
	LogChangeResync LogChangePolicy = "Resync"
)

// WorkerStateSpec says where each worker pod keeps its positions.
// +kubebuilder:validation:XValidation:rule="!self.ephemeral || (!has(self.size) && !has(self.storageClassName))",message="state.size and state.storageClassName have no effect when state.ephemeral is true"
type WorkerStateSpec struct {
	// Ephemeral keeps positions in an emptyDir: a deleted pod's
	// replacement starts from the master's current position and skips what
	// was published meanwhile. For workers that resync by other means.
	// +optional
	// +kubebuilder:default=false
	Ephemeral bool `json:"ephemeral,omitempty"`

	// Size of each pod's PersistentVolumeClaim. Defaults to 1Gi.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the claims; empty means the cluster default.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// MasterReference names a ReplicationMaster in the same namespace.
type MasterReference struct {
	// Name of the ReplicationMaster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
}

// ReplicationWorkerStatus is what the operator observed of the workers.
type ReplicationWorkerStatus struct {
	// Conditions: Ready, Connected, Lagging, and TLSReady when the
	// master has spec.tls.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// ObservedGeneration is the generation of the spec that was last
	// reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Image is the image the operator last gave the worker: spec.image
	// when set, else the image recorded here, which stays when the
	// operator's own image changes (see the operator's
	// --operand-image-policy and docs/operations.md).
	// +optional
	Image string `json:"image,omitempty"`

	// Replicas is the number of worker pods that exist.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// Selector is the label selector of the worker pods, in string form
	// ("a=b,c=d"), for the scale subresource: a HorizontalPodAutoscaler
	// reads it to find the pods whose metrics it averages.
	// +optional
	Selector string `json:"selector,omitempty"`

	// ReadyReplicas is the number of worker pods that are ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// ConnectedReplicas is the number of worker pods the master's connection
	// table shows as connected.
	// +optional
	ConnectedReplicas int32 `json:"connectedReplicas,omitempty"`

	// Ready is "ready/desired" for display, like a Deployment's READY column.
	// +optional
	Ready string `json:"ready,omitempty"`

	// Connected is "connected/desired" for display.
	// +optional
	Connected string `json:"connected,omitempty"`

	// MaxLag is the worst seconds-behind over every stream of every pod, as
	// a Go duration string rounded to the millisecond.
	// +optional
	MaxLag string `json:"maxLag,omitempty"`

	// MaxTokensBehind is the worst tokens-behind over every stream of every
	// pod.
	// +optional
	MaxTokensBehind int64 `json:"maxTokensBehind,omitempty"`

	// LaggingReplicas is the number of worker pods more than
	// spec.maxLagSeconds behind.
	// +optional
	LaggingReplicas int32 `json:"laggingReplicas,omitempty"`

	// Pods holds the worst worker pods (not ready or not connected first,
	// then the most behind), at most 20, so that the status stays small at
	// any scale; PodsOmitted counts the rest. Replicas, ReadyReplicas,
	// ConnectedReplicas and LaggingReplicas count every pod.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	Pods []WorkerPodStatus `json:"pods,omitempty"`

	// PodsOmitted is how many worker pods Pods leaves out.
	// +optional
	PodsOmitted int32 `json:"podsOmitted,omitempty"`

	// LastProbeTime is when the master's probe took the snapshot this
	// status shows.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`
}

// WorkerPodStatus is one worker pod as the master sees it.
type WorkerPodStatus struct {
	// Name of the pod.
	Name string `json:"name"`
	// PodIP is the pod's IP address.
	// +optional
	PodIP string `json:"podIP,omitempty"`
	// Connected is true when the master's connection table holds a
	// connection from this pod (matched by pod IP, or by the NAME the worker
	// sent, which is the pod name).
	Connected bool `json:"connected"`
	// ConnectedSince is when the connection was opened.
	// +optional
	ConnectedSince *metav1.Time `json:"connectedSince,omitempty"`
	// Ready is the pod's Ready condition.
	Ready bool `json:"ready"`
	// Reason says why the pod is not ready or not connected, in the
	// worker's words when it tells (its /readyz, e.g. "sink failing: ...").
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
	// Streams holds the pod's position and lag per subscribed stream.
	// +optional
	// +listType=map
	// +listMapKey=name
	Streams []WorkerStreamStatus `json:"streams,omitempty"`
}

// WorkerStreamStatus is one stream of one worker pod.
type WorkerStreamStatus struct {
	// Name of the stream.
	Name string `json:"name"`
	// Token is the last token the master sent on this stream; 0 when the
	// pod has no connection.
	Token int64 `json:"token"`
	// Position is the worker's durable position: the last token its sink
	// accepted, as the worker reports it. Absent when the worker does not
	// report positions (an image other than the reference worker).
	// +optional
	Position *int64 `json:"position,omitempty"`
	// TokensBehind is how far the stream is ahead of what the worker has
	// processed: of Position when known, else of Token.
	TokensBehind int64 `json:"tokensBehind"`
	// SecondsBehind is the age of the oldest row the worker has not
	// processed (not yet sent, or sent and not yet in the sink), in decimal
	// seconds with millisecond precision.
	SecondsBehind string `json:"secondsBehind"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=rworker,categories=tcprepl
// +kubebuilder:printcolumn:name="Master",type=string,JSONPath=`.spec.masterRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.connected`
// +kubebuilder:printcolumn:name="Max Lag",type=string,JSONPath=`.status.maxLag`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ReplicationWorker runs worker pods that replicate streams from a
// ReplicationMaster.
type ReplicationWorker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired workers.
	Spec ReplicationWorkerSpec `json:"spec"`
	// Status is what the operator observed.
	// +optional
	Status ReplicationWorkerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ReplicationWorkerList is a list of ReplicationWorker.
type ReplicationWorkerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the workers.
	Items []ReplicationWorker `json:"items"`
}
