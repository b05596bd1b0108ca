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
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReplicationMasterSpec is the desired state of a master: one pod running
// `tcprepl master`, its storage, its Services and who may reach it.
// +kubebuilder:validation:XValidation:rule="self.replicationPort != self.httpPort",message="replicationPort and httpPort must differ"
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || self.replicas <= 1 || has(self.storage.postgres)",message="replicas above 1 needs storage.postgres: standby masters share the log through PostgreSQL, while a Pebble log lives on one pod's volume and has exactly one writer"
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || !has(self.tls.plaintextReplicationPort) || (self.tls.plaintextReplicationPort != self.replicationPort && self.tls.plaintextReplicationPort != self.httpPort)",message="tls.plaintextReplicationPort must differ from replicationPort and httpPort"
// +kubebuilder:validation:XValidation:rule="!has(self.retention.streams) || self.retention.streams.all(r, (r.name in ['events', 'backfill', 'presence', 'typing', 'receipts', 'push_rules', 'pushers', 'caches', 'public_rooms', 'device_lists', 'to_device', 'tag_account_data', 'account_data', 'groups', 'user_signature']) || (r.name == 'federation' && has(self.streams.federation) && self.streams.federation) || (has(self.streams.custom) && self.streams.custom.exists(c, c.name == r.name)))",message="retention.streams names a stream the master does not publish: use a standard stream, federation with streams.federation, or a declared custom stream"
type ReplicationMasterSpec struct {
	// ServerName is the name the master announces with `SERVER` and that
	// every worker checks (a mismatch is "Wrong remote"). It cannot change
	// after creation: every connected worker would refuse the master.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="serverName is immutable: workers check it on every connection"
	ServerName string `json:"serverName"`

	// Image is the container image that runs `tcprepl master`; changing it
	// rolls the master. Empty means the image in status.image, first the
	// operator's own (one image serves every role): a new operator image
	// does not restart the master unless the operator runs with
	// --operand-image-policy=follow.
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the master container.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ReplicationPort is the TCP port of the replication protocol.
	// +optional
	// +kubebuilder:default=9092
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ReplicationPort int32 `json:"replicationPort,omitempty"`

	// HTTPPort is the port of the publish API, /metrics, /healthz and /readyz.
	// +optional
	// +kubebuilder:default=9093
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	HTTPPort int32 `json:"httpPort,omitempty"`

	// Streams selects the optional standard streams and declares custom ones.
	// +optional
	// +kubebuilder:default={}
	Streams StreamsSpec `json:"streams,omitempty"`

	// Replicas is how many master pods run, 1 to 5. Above 1 needs
	// storage.postgres: one pod is active (it holds the log's lock in
	// PostgreSQL and is the only ready one, so the Service routes to it) and
	// the others are standbys that take over within seconds when it fails.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=5
	Replicas *int32 `json:"replicas,omitempty"`

	// Storage is where the master keeps its stream log. Only size may
	// change after creation, and only grow: the operator then expands the
	// existing claim, which needs a storage class that allows expansion.
	// Everything else is fixed: a StatefulSet's volume claims cannot move.
	// +kubebuilder:validation:XValidation:rule="has(self.postgres) == has(oldSelf.postgres)",message="storage.postgres cannot be added or removed: the log cannot move between a volume and PostgreSQL in place; move it with `tcprepl master migrate` into a new master"
	// +kubebuilder:validation:XValidation:rule="self.ephemeral == oldSelf.ephemeral",message="storage.ephemeral is immutable: the log cannot move between a volume and an emptyDir; create a new master to move it"
	// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable: a claim cannot move to another class; create a new master to move the log"
	// +kubebuilder:validation:XValidation:rule="has(self.size) == has(oldSelf.size) && (!has(self.size) || quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0)",message="storage.size can only grow: a PersistentVolumeClaim cannot shrink; create a new master for a smaller log"
	Storage StorageSpec `json:"storage"`

	// Retention bounds how much of each stream's log the master keeps. A
	// worker asking for a token older than retention is refused with an ERROR
	// that names the oldest token still held.
	// +optional
	// +kubebuilder:default={}
	Retention RetentionSpec `json:"retention,omitempty"`

	// KeepAlive tunes the protocol's PING keep-alive and timeout.
	// +optional
	// +kubebuilder:default={}
	KeepAlive KeepAliveSpec `json:"keepAlive,omitempty"`

	// Limits bound what one connection may cost the master.
	// +optional
	// +kubebuilder:default={}
	Limits LimitsSpec `json:"limits,omitempty"`

	// Resources of the master container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// PodTemplate holds overrides for the master pod.
	// +optional
	PodTemplate *PodTemplateOverrides `json:"podTemplate,omitempty"`

	// NetworkPolicy restricts who may reach the master. On by default.
	// +optional
	// +kubebuilder:default={}
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// TLS serves the replication and HTTP ports over TLS, with client
	// certificates for workers and the probe (docs/security.md).
	// +optional
	TLS *MasterTLSSpec `json:"tls,omitempty"`
}

// StreamsSpec selects the streams the master publishes. The 16 standard
// streams of the protocol are always published, except federation, which is
// off unless enabled (Synapse published it only when the master did not send
// federation itself).
type StreamsSpec struct {
	// Federation publishes the federation stream.
	// +optional
	// +kubebuilder:default=false
	Federation bool `json:"federation,omitempty"`

	// Custom declares streams beyond the standard ones. Their rows are JSON
	// arrays, of a fixed length when Fields is set.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Custom []CustomStream `json:"custom,omitempty"`
}

// CustomStream is one user-declared stream.
// +kubebuilder:validation:XValidation:rule="!(self.name in ['events', 'backfill', 'presence', 'typing', 'receipts', 'push_rules', 'pushers', 'caches', 'public_rooms', 'device_lists', 'to_device', 'federation', 'tag_account_data', 'account_data', 'groups', 'user_signature'])",message="a custom stream must not reuse the name of a standard stream"
type CustomStream struct {
	// Name of the stream as it appears on the wire (`RDATA <name> ...`).
	// +kubebuilder:validation:Pattern=`^[a-z][a-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Fields, when set, is the number of fields every row of the stream
	// must have; the master refuses other rows. Unset accepts any JSON
	// array.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Fields *int32 `json:"fields,omitempty"`
}

// StorageSpec says where the stream log lives: a PersistentVolumeClaim
// (Pebble, the default), an emptyDir (ephemeral), or PostgreSQL.
// +kubebuilder:validation:XValidation:rule="has(self.postgres) || self.ephemeral || has(self.size)",message="storage.size is required unless storage.ephemeral is true or storage.postgres is set"
// +kubebuilder:validation:XValidation:rule="!has(self.postgres) || (!self.ephemeral && !has(self.size) && !has(self.storageClassName))",message="storage.postgres keeps the log in PostgreSQL: the master has no volume, so storage.ephemeral, storage.size and storage.storageClassName must be unset"
// +kubebuilder:validation:XValidation:rule="!self.ephemeral || !has(self.storageClassName)",message="storage.storageClassName has no effect when storage.ephemeral is true"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || quantity(string(self.size)).compareTo(quantity('64Mi')) >= 0",message="storage.size must be at least 64Mi: the log's memtables and write-ahead log alone need that much (0 and negative sizes are refused)"
type StorageSpec struct {
	// Ephemeral keeps the log in an emptyDir: tokens and rows are lost when
	// the pod is deleted. For tests and demos.
	// +optional
	// +kubebuilder:default=false
	Ephemeral bool `json:"ephemeral,omitempty"`

	// Size of the PersistentVolumeClaim that holds the log, at least 64Mi.
	// Required unless ephemeral. It may grow later (never shrink): the
	// operator expands the existing claim, which needs a storage class with
	// allowVolumeExpansion.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the claim; empty means the cluster default.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Postgres keeps the log in a PostgreSQL database instead of a volume,
	// which lets spec.replicas run standby masters. It cannot be added or
	// removed after creation.
	// +optional
	Postgres *PostgresStorage `json:"postgres,omitempty"`
}

// PostgresStorage names the PostgreSQL database of the log: a Secret key
// holding its connection URI, or a CloudNativePG Cluster in the same
// namespace, whose "<cluster>-app" Secret's "uri" key is used.
// +kubebuilder:validation:XValidation:rule="has(self.uriSecretRef) != has(self.cluster)",message="storage.postgres needs exactly one of uriSecretRef (a Secret key holding the URI) and cluster (a CloudNativePG Cluster name)"
type PostgresStorage struct {
	// URISecretRef is the Secret key holding the connection URI
	// ("postgresql://user:password@host:5432/db?sslmode=require").
	// +optional
	URISecretRef *SecretKeyRef `json:"uriSecretRef,omitempty"`

	// Cluster is the name of a CloudNativePG Cluster in the master's
	// namespace; the master connects with the URI CloudNativePG publishes
	// in the Secret "<cluster>-app", key "uri" (the application user and
	// database, through the read-write Service).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=249
	Cluster string `json:"cluster,omitempty"`
}

// RetentionSpec bounds each stream's log by row count and by age; whichever
// limit is hit first removes the oldest tokens. An unset limit means no
// limit; zero is refused rather than read as "no limit".
type RetentionSpec struct {
	// MaxRows is the most rows kept per stream, at least 1. Unset keeps
	// every row (bounded only by MaxAge).
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxRows *int64 `json:"maxRows,omitempty"`

	// MaxAge is the longest a row is kept, as a Go duration ("168h"), at
	// least 1m. Unset keeps rows however old (bounded only by MaxRows);
	// "0s" is refused.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="retention.maxAge must be at least 1m; leave it unset for no age limit"
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`

	// Streams overrides MaxRows and MaxAge for individual streams.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=80
	Streams []StreamRetention `json:"streams,omitempty"`
}

// StreamRetention is the retention of one named stream.
type StreamRetention struct {
	// Name of the stream: a standard stream or a custom one declared in
	// spec.streams.custom.
	// +kubebuilder:validation:Pattern=`^[a-z][a-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// MaxRows is the most rows kept for this stream, at least 1. An entry
	// replaces the default limits for its stream as a whole: a limit unset
	// here is no limit for this stream, even when the default sets one.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxRows *int64 `json:"maxRows,omitempty"`

	// MaxAge is the longest a row of this stream is kept ("24h"), at least
	// 1m. Unset here is no age limit for this stream; "0s" is refused.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="retention.streams[].maxAge must be at least 1m; leave it unset for no age limit on this stream"
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`
}

// KeepAliveSpec tunes PING and the ping timeout (docs/protocol.md, "Keep-alive").
// +kubebuilder:validation:XValidation:rule="!has(self.pingTimeout) || !has(self.pingInterval) || duration(self.pingTimeout).getMilliseconds() >= 2 * duration(self.pingInterval).getMilliseconds()",message="keepAlive.pingTimeout must be at least twice keepAlive.pingInterval, or a single late PING closes a healthy connection (Synapse uses 5s and 25s)"
type KeepAliveSpec struct {
	// PingInterval: a side that has sent nothing for this long sends PING.
	// At least 1s; unset means 5s, Synapse's interval. "0s" is refused
	// rather than read as the default.
	// +optional
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="keepAlive.pingInterval must be at least 1s: shorter intervals flood every connection with PINGs; leave it unset for 5s"
	PingInterval *metav1.Duration `json:"pingInterval,omitempty"`

	// PingTimeout: a connection that has received nothing for this long (once
	// the peer has sent a PING) is closed with `ERROR ping timeout`. At
	// least 2s and at least twice PingInterval; unset means 25s. "0s" is
	// refused rather than read as the default.
	// +optional
	// +kubebuilder:default="25s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('2s')",message="keepAlive.pingTimeout must be at least 2s; leave it unset for 25s"
	PingTimeout *metav1.Duration `json:"pingTimeout,omitempty"`
}

// LimitsSpec bounds per-connection costs.
type LimitsSpec struct {
	// MaxPendingCommands is how many commands may queue for a connection
	// whose socket is full before it is closed with `ERROR Failed to keep
	// up`; the worker reconnects and resumes from its last token. At least
	// 100; unset means 10000.
	// +optional
	// +kubebuilder:default=10000
	// +kubebuilder:validation:Minimum=100
	MaxPendingCommands int32 `json:"maxPendingCommands,omitempty"`

	// MaxLineLength is the longest protocol line accepted or sent, in bytes.
	// Synapse's limit was 16384; a peer that is Synapse needs exactly that.
	// Between 1024 and 16777216; unset means 16384.
	// +optional
	// +kubebuilder:default=16384
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=16777216
	MaxLineLength int32 `json:"maxLineLength,omitempty"`
}

// NetworkPolicySpec describes the NetworkPolicy the operator keeps for the
// master. The replication port is open to the pods of the ReplicationWorkers
// that reference this master and to the operator; the HTTP port to the
// operator and the peers listed in HTTPFrom.
type NetworkPolicySpec struct {
	// Enabled creates the NetworkPolicy. Turning it off deletes it.
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// HTTPFrom are the peers allowed to reach the HTTP port besides the
	// operator: producers that publish rows, Prometheus.
	// +optional
	// +listType=atomic
	HTTPFrom []networkingv1.NetworkPolicyPeer `json:"httpFrom,omitempty"`

	// ReplicationFrom are extra peers allowed on the replication port, for
	// workers the operator does not manage (for example a Synapse process).
	// +optional
	// +listType=atomic
	ReplicationFrom []networkingv1.NetworkPolicyPeer `json:"replicationFrom,omitempty"`
}

// IsEnabled reports whether the NetworkPolicy should exist; nil means the
// default, on.
func (n NetworkPolicySpec) IsEnabled() bool { return n.Enabled == nil || *n.Enabled }

// ReplicationMasterStatus is what the operator observed of the master.
type ReplicationMasterStatus struct {
	// Conditions: Ready, Available, Progressing, Degraded, and TLSReady
	// with spec.tls.
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

	// Image is the image the operator last gave the master: spec.image
	// when set, else the image recorded here, which stays when the
	// operator's own image changes (see the operator's
	// --operand-image-policy and docs/operations.md).
	// +optional
	Image string `json:"image,omitempty"`

	// Endpoint is the in-cluster host:port of the replication protocol.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// HTTPEndpoint is the in-cluster base URL of the publish API.
	// +optional
	HTTPEndpoint string `json:"httpEndpoint,omitempty"`

	// PublishTokenSecret names the Secret (key "token") holding the bearer
	// token producers need to publish rows; mount it in producer pods.
	// +optional
	PublishTokenSecret string `json:"publishTokenSecret,omitempty"`

	// StreamCount is how many streams the master publishes, as seen by the
	// probe.
	// +optional
	StreamCount int32 `json:"streamCount,omitempty"`

	// Streams holds each stream's position and rate, sorted by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	Streams []StreamStatus `json:"streams,omitempty"`

	// ConnectedWorkers is how many client connections the master holds,
	// the operator's probe excluded.
	// +optional
	ConnectedWorkers int32 `json:"connectedWorkers,omitempty"`

	// Heartbeat is the round-trip latency of heartbeats the probe sends
	// through the master.
	// +optional
	Heartbeat *HeartbeatStatus `json:"heartbeat,omitempty"`

	// LogID is the identity of the master's stream log, as the master
	// announces it to clients. It changes only when the log is new (an
	// ephemeral master restarted, or its volume was replaced): tokens then
	// start over and workers' saved positions no longer apply.
	// +optional
	LogID string `json:"logId,omitempty"`

	// LastProbeTime is when the probe took the snapshot this status shows.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`

	// ActivePod is the master pod that serves: the ready one (a standby
	// answers /readyz with 503 until it holds the log). Empty when none is.
	// +optional
	ActivePod string `json:"activePod,omitempty"`

	// ReadyStandbys is how many master pods other than the active one are
	// running and waiting to take over.
	// +optional
	ReadyStandbys int32 `json:"readyStandbys,omitempty"`

	// LastTakeoverTime is when the operator last saw another pod become
	// the active master.
	// +optional
	LastTakeoverTime *metav1.Time `json:"lastTakeoverTime,omitempty"`
}

// StreamStatus is one stream's position.
type StreamStatus struct {
	// Name of the stream.
	Name string `json:"name"`
	// Token is the stream's current position.
	Token int64 `json:"token"`
	// OldestToken is the oldest token the master still holds (Token+1 when
	// it holds none): a worker whose position is OldestToken-1 or later can
	// catch up; one further behind has lost rows and must resync.
	// +optional
	OldestToken *int64 `json:"oldestToken,omitempty"`
	// RowsPerSecond is the recent publish rate, as a decimal string.
	// +optional
	RowsPerSecond string `json:"rowsPerSecond,omitempty"`
}

// HeartbeatStatus summarises heartbeat round trips over the probe's window.
// Durations are Go duration strings rounded to 10µs.
type HeartbeatStatus struct {
	// Last is the latest round trip.
	// +optional
	Last string `json:"last,omitempty"`
	// P50 is the median round trip.
	// +optional
	P50 string `json:"p50,omitempty"`
	// P99 is the 99th percentile round trip.
	// +optional
	P99 string `json:"p99,omitempty"`
	// Max is the slowest round trip in the window.
	// +optional
	Max string `json:"max,omitempty"`
	// Stale is true when a heartbeat has been outstanding too long: the
	// master is not relaying, or is badly overloaded.
	// +optional
	Stale bool `json:"stale,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rmaster,categories=tcprepl
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.activePod`
// +kubebuilder:printcolumn:name="Standbys",type=integer,JSONPath=`.status.readyStandbys`
// +kubebuilder:printcolumn:name="Streams",type=integer,JSONPath=`.status.streamCount`
// +kubebuilder:printcolumn:name="Workers",type=integer,JSONPath=`.status.connectedWorkers`
// +kubebuilder:printcolumn:name="Heartbeat",type=string,JSONPath=`.status.heartbeat.last`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ReplicationMaster runs one tcprepl master: the process that owns the
// streams and that workers replicate from.
type ReplicationMaster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired master.
	Spec ReplicationMasterSpec `json:"spec"`
	// Status is what the operator observed.
	// +optional
	Status ReplicationMasterStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ReplicationMasterList is a list of ReplicationMaster.
type ReplicationMasterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the masters.
	Items []ReplicationMaster `json:"items"`
}
