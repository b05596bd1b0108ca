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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// DefaultSolicitInterval is how often the watcher publishes `REPLICATE `
// when spec.solicitInterval is unset.
const DefaultSolicitInterval = "60s"

// MinSolicitInterval is the shortest non-zero solicit interval: every
// process of the deployment answers a REPLICATE with one POSITION per stream
// it writes, so soliciting more often only adds load.
const MinSolicitInterval = "10s"

// SynapseReplicationSpec points the operator at an existing Synapse
// deployment (v1.67 or later, with workers) whose processes replicate over
// Redis pub/sub. The operator never writes anything to that deployment but
// `REPLICATE ` on its channel, which every Synapse process answers by
// re-announcing its positions.
type SynapseReplicationSpec struct {
	// ServerName is the homeserver's server_name. It is also the Redis
	// pub/sub channel Synapse uses for replication (Redis ignores the db
	// number for pub/sub: only the channel separates two homeservers on one
	// Redis).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[^\s/]+$`
	ServerName string `json:"serverName"`

	// Redis is the Redis that the deployment's processes use (the `redis`
	// section of the homeserver config).
	Redis SynapseRedisSpec `json:"redis"`

	// HomeserverConfigRef names the homeserver config YAML (a ConfigMap or
	// Secret key) whose `stream_writers` say which instances must write
	// which stream. With it, the status reports every configured writer that
	// does not announce its stream after a REPLICATE (MissingWriter) and
	// every instance that writes a stream it is not configured for
	// (UnexpectedWriter). Without it, positions and gaps are still reported
	// but no writer is missing or unexpected.
	// +optional
	HomeserverConfigRef *ConfigKeyRef `json:"homeserverConfigRef,omitempty"`

	// SolicitInterval is how often the watcher publishes `REPLICATE ` so
	// that every process re-announces its positions, as a Go duration. It
	// also publishes once after every (re)connect. "0s" means never after
	// the first: positions are then learned from traffic alone and a writer
	// that is idle is not re-checked. Otherwise at least 10s.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || duration(self) >= duration('10s')",message="solicitInterval must be 0s (solicit only on connect) or at least 10s"
	SolicitInterval *metav1.Duration `json:"solicitInterval,omitempty"`
}

// SynapseRedisSpec is how to reach the deployment's Redis.
// +kubebuilder:validation:XValidation:rule="!has(self.username) || has(self.passwordSecretRef)",message="redis.username needs redis.passwordSecretRef: Redis ACL users authenticate with a password"
type SynapseRedisSpec struct {
	// Address is the Redis host:port, for example the ess-helm Service
	// "ess-synapse-redis.matrix.svc.cluster.local:6379".
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+:[0-9]{1,5}$`
	Address string `json:"address"`

	// Username is the Redis ACL user (Redis 6 and later). Empty means the
	// default user.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Username string `json:"username,omitempty"`

	// PasswordSecretRef names the Secret key that holds the Redis password
	// (Synapse's `redis.password`). The operator reads that one Secret and
	// never logs or exports the value. Unset means no AUTH.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`

	// DB is the Redis database number selected after AUTH. Pub/sub ignores
	// it; it matters only when an ACL restricts the user to one db.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	DB int32 `json:"db,omitempty"`

	// TLS connects to Redis over TLS.
	// +optional
	TLS *SynapseRedisTLS `json:"tls,omitempty"`
}

// SynapseRedisTLS configures TLS to Redis.
// +kubebuilder:validation:XValidation:rule="self.enabled || (!has(self.caRef) && !has(self.serverName))",message="redis.tls.caRef and redis.tls.serverName need redis.tls.enabled: true"
type SynapseRedisTLS struct {
	// Enabled turns TLS on.
	Enabled bool `json:"enabled"`

	// CARef names the PEM bundle (a ConfigMap or Secret key) of the
	// certificate authorities that sign Redis's certificate. Unset means the
	// operator's system roots.
	// +optional
	CARef *ConfigKeyRef `json:"caRef,omitempty"`

	// ServerName is the name checked against Redis's certificate. Empty
	// means the host part of redis.address.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServerName string `json:"serverName,omitempty"`
}

// SecretKeyRef names one key of a Secret in the resource's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ConfigKeyRef names one key of a ConfigMap or a Secret in the resource's
// namespace.
type ConfigKeyRef struct {
	// Kind of the object holding the key.
	// +kubebuilder:validation:Enum=ConfigMap;Secret
	// +kubebuilder:default=ConfigMap
	// +optional
	Kind string `json:"kind,omitempty"`
	// Name of the ConfigMap or Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key in its data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// Kinds a ConfigKeyRef may name.
const (
	KindConfigMap = "ConfigMap"
	KindSecret    = "Secret"
)

// Bounds of the status lists: a deployment with more streams or writers than
// this still gets its counts and conditions right; the lists say how many
// entries they left out.
const (
	// MaxStatusStreams is the most streams listed in status.
	MaxStatusStreams = 64
	// MaxStatusWritersPerStream is the most writers listed per stream.
	MaxStatusWritersPerStream = 32
	// MaxStatusWriterRefs bounds missingWriters and unexpectedWriters.
	MaxStatusWriterRefs = 32
	// MaxStatusResponders bounds responders.
	MaxStatusResponders = 128
)

// SynapseReplicationStatus is what the watcher observed on the channel.
type SynapseReplicationStatus struct {
	// Conditions: Ready (the watcher holds a Redis subscription),
	// WritersHealthy (every configured writer announced, none unexpected, no
	// gaps) and Degraded (a pub/sub client's Redis output buffer is above
	// half its limit).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// ObservedGeneration is the generation of the spec the running watcher
	// was started from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// StreamCount is how many streams were seen or configured.
	// +optional
	StreamCount int32 `json:"streamCount,omitempty"`

	// WriterCount is how many (stream, instance) writers announced.
	// +optional
	WriterCount int32 `json:"writerCount,omitempty"`

	// MissingWriterCount is how many configured writers have not announced
	// their stream since the last REPLICATE settled.
	// +optional
	MissingWriterCount int32 `json:"missingWriterCount,omitempty"`

	// MissingWriters are configured writers that have not announced their
	// stream (element-hq/synapse#20080: a stuck /sync), sorted by stream and
	// instance, at most 32.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	MissingWriters []SynapseWriterRef `json:"missingWriters,omitempty"`

	// UnexpectedWriters are instances writing a stream that stream_writers
	// does not give them, at most 32.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	UnexpectedWriters []SynapseWriterRef `json:"unexpectedWriters,omitempty"`

	// Streams holds every stream with its writers, sorted by name, at most
	// 64.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Streams []SynapseStreamStatus `json:"streams,omitempty"`

	// OmittedStreams is how many streams did not fit in Streams.
	// +optional
	OmittedStreams int32 `json:"omittedStreams,omitempty"`

	// Responders are the processes (instance names) that announced a
	// position after the last REPLICATE, sorted, at most 128.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	Responders []string `json:"responders,omitempty"`

	// Redis is what Redis reports about the pub/sub side.
	// +optional
	Redis *SynapseRedisStatus `json:"redis,omitempty"`

	// LastMessageTime is when anything was last heard on the channel.
	// +optional
	LastMessageTime *metav1.Time `json:"lastMessageTime,omitempty"`

	// LastSolicitTime is when the watcher last published `REPLICATE `.
	// +optional
	LastSolicitTime *metav1.Time `json:"lastSolicitTime,omitempty"`
}

// SynapseStreamStatus is one replication stream and its writers.
type SynapseStreamStatus struct {
	// Name of the stream (events, typing, caches, ...; any name Synapse
	// sends).
	Name string `json:"name"`

	// Writers are the instances writing the stream (and the configured ones
	// that have not announced), sorted by instance, at most 32.
	// +optional
	// +listType=map
	// +listMapKey=instance
	// +kubebuilder:validation:MaxItems=32
	Writers []SynapseWriterStatus `json:"writers,omitempty"`

	// OmittedWriters is how many writers did not fit in Writers.
	// +optional
	OmittedWriters int32 `json:"omittedWriters,omitempty"`

	// Spread is the highest writer position minus the lowest, among the
	// writers that announced.
	// +optional
	Spread int64 `json:"spread,omitempty"`
}

// SynapseWriterStatus is one instance's position on one stream.
type SynapseWriterStatus struct {
	// Instance is the Synapse instance name ("master" for the main process
	// unless renamed; in ess-helm the worker's pod name).
	Instance string `json:"instance"`

	// Announced is true once the instance sent RDATA or POSITION for the
	// stream.
	Announced bool `json:"announced"`

	// Configured is true when stream_writers names the instance for the
	// stream (or the stream has no configured writers and this is "master").
	// +optional
	Configured bool `json:"configured,omitempty"`

	// Position is the highest token the instance announced since its last
	// reset.
	// +optional
	Position int64 `json:"position,omitempty"`

	// LastAdvanceTime is when Position last grew.
	// +optional
	LastAdvanceTime *metav1.Time `json:"lastAdvanceTime,omitempty"`

	// Gaps counts POSITIONs whose prev_token was ahead of the last position
	// seen: rows the watcher (and any slow subscriber) missed.
	// +optional
	Gaps int64 `json:"gaps,omitempty"`

	// Resets counts times the position went back (the writer restarted).
	// +optional
	Resets int64 `json:"resets,omitempty"`
}

// SynapseWriterRef names one writer of one stream.
type SynapseWriterRef struct {
	// Stream name.
	Stream string `json:"stream"`
	// Instance name.
	Instance string `json:"instance"`
}

// SynapseRedisStatus is what Redis says about the pub/sub side.
type SynapseRedisStatus struct {
	// Subscribers is `PUBSUB NUMSUB <serverName>`, the watcher included.
	// +optional
	Subscribers int64 `json:"subscribers,omitempty"`

	// MaxOutputBufferBytes is the largest output buffer (`omem`) of any
	// pub/sub client.
	// +optional
	MaxOutputBufferBytes int64 `json:"maxOutputBufferBytes,omitempty"`

	// MaxOutputBufferClient is the address (and name, if set) of that
	// client.
	// +optional
	MaxOutputBufferClient string `json:"maxOutputBufferClient,omitempty"`

	// OutputBufferLimitBytes is the pub/sub output buffer limit Redis
	// enforces (the hard limit, or the soft one when lower); zero means no
	// limit.
	// +optional
	OutputBufferLimitBytes int64 `json:"outputBufferLimitBytes,omitempty"`

	// Unavailable says what could not be read (for example an ACL that
	// forbids CLIENT or CONFIG); the rest is still valid.
	// +optional
	Unavailable string `json:"unavailable,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=srepl,categories=tcprepl
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.serverName`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Streams",type=integer,JSONPath=`.status.streamCount`
// +kubebuilder:printcolumn:name="Writers",type=integer,JSONPath=`.status.writerCount`
// +kubebuilder:printcolumn:name="Missing",type=integer,JSONPath=`.status.missingWriterCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// SynapseReplication watches the replication of an existing Synapse
// deployment over its Redis: per stream and per writer positions, writers
// that never announce, gaps, and Redis's pub/sub output buffers.
type SynapseReplication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says which deployment to watch.
	Spec SynapseReplicationSpec `json:"spec"`
	// Status is what the watcher observed.
	// +optional
	Status SynapseReplicationStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// SynapseReplicationList is a list of SynapseReplication.
type SynapseReplicationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the SynapseReplications.
	Items []SynapseReplication `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &SynapseReplication{}, &SynapseReplicationList{})
		return nil
	})
}
