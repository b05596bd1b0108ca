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

// Condition types. Each resource's status carries the ones its doc lists.
const (
	// ConditionReady: the resource does its job. For a master: its pod is
	// ready and the probe holds a caught-up connection. For workers: every
	// desired pod is ready.
	ConditionReady = "Ready"
	// ConditionAvailable: the master pod is running and ready.
	ConditionAvailable = "Available"
	// ConditionProgressing: a rollout of the master pod is in progress.
	ConditionProgressing = "Progressing"
	// ConditionDegraded: something needs attention (a failed reconcile, an
	// unreachable master, stale heartbeats).
	ConditionDegraded = "Degraded"
	// ConditionConnected: every desired worker pod has a connection to the
	// master.
	ConditionConnected = "Connected"
	// ConditionLagging: some worker stream is more than spec.maxLagSeconds
	// behind.
	ConditionLagging = "Lagging"
)

// Condition reasons. They are part of the API: alerts and scripts match on
// them.
const (
	// ReasonMasterReady: the master pod is ready and the probe is connected.
	ReasonMasterReady = "MasterReady"
	// ReasonPodReady: the master pod is ready.
	ReasonPodReady = "PodReady"
	// ReasonPodNotReady: the master pod does not exist yet or is not ready.
	ReasonPodNotReady = "PodNotReady"
	// ReasonRollingOut: the StatefulSet is rolling a new pod template out.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutComplete: the pod runs the current template.
	ReasonRolloutComplete = "RolloutComplete"
	// ReasonAsExpected: nothing is wrong.
	ReasonAsExpected = "AsExpected"
	// ReasonReconcileFailed: the operator could not create or update an
	// owned object; the message says which and why.
	ReasonReconcileFailed = "ReconcileFailed"
	// ReasonProbePending: the probe has not produced a snapshot yet.
	ReasonProbePending = "ProbePending"
	// ReasonMasterUnreachable: the probe cannot hold a connection to the
	// master's replication port.
	ReasonMasterUnreachable = "MasterUnreachable"
	// ReasonWrongServerName: the master announced a different SERVER name
	// than spec.serverName.
	ReasonWrongServerName = "WrongServerName"
	// ReasonProtocolError: the master sent something the protocol forbids.
	ReasonProtocolError = "ProtocolError"
	// ReasonHTTPUnreachable: positions are known but the connection table
	// (the HTTP API) cannot be read.
	ReasonHTTPUnreachable = "HTTPUnreachable"
	// ReasonHeartbeatStale: a heartbeat has not come back in time.
	ReasonHeartbeatStale = "HeartbeatStale"
	// ReasonLogReset: the master serves a new log (status.logId changed,
	// or a stream's token went backwards): rows workers had not read from
	// the old log are gone, and workers resume or stop as their
	// spec.onLogChange says.
	ReasonLogReset = "LogReset"

	// ReasonMasterNotFound: spec.masterRef names no ReplicationMaster.
	ReasonMasterNotFound = "MasterNotFound"
	// ReasonAllReplicasReady: every desired worker pod is ready.
	ReasonAllReplicasReady = "AllReplicasReady"
	// ReasonReplicasNotReady: some desired worker pods are not ready.
	ReasonReplicasNotReady = "ReplicasNotReady"
	// ReasonAllConnected: every desired worker pod is connected.
	ReasonAllConnected = "AllConnected"
	// ReasonNotConnected: fewer pods are connected than desired.
	ReasonNotConnected = "NotConnected"
	// ReasonConnectionsUnknown: the master's connection table cannot be
	// read (probe not connected, or HTTP API unreachable).
	ReasonConnectionsUnknown = "ConnectionsUnknown"
	// ReasonUnknownStream: spec.streams names a stream the master does not
	// publish; the worker cannot connect until the name is fixed or the
	// master publishes it.
	ReasonUnknownStream = "UnknownStream"
	// ReasonLagUnknown: some pods have neither a connection nor a reported
	// position, so their lag is not known.
	ReasonLagUnknown = "LagUnknown"
	// ReasonLagAboveThreshold: a stream is more than maxLagSeconds behind.
	ReasonLagAboveThreshold = "LagAboveThreshold"
	// ReasonLagWithinThreshold: every stream is within maxLagSeconds.
	ReasonLagWithinThreshold = "LagWithinThreshold"
)

// SynapseReplication condition types and reasons.
const (
	// ConditionWritersHealthy: every configured stream writer announced its
	// stream after a REPLICATE, no instance writes a stream it is not
	// configured for, and no writer showed a gap.
	ConditionWritersHealthy = "WritersHealthy"

	// ReasonSubscribed: the watcher holds a Redis subscription to the
	// deployment's channel.
	ReasonSubscribed = "Subscribed"
	// ReasonWatcherPending: the watcher has not connected yet.
	ReasonWatcherPending = "WatcherPending"
	// ReasonRedisUnreachable: Redis cannot be dialed or the connection was
	// lost; the watcher retries with backoff.
	ReasonRedisUnreachable = "RedisUnreachable"
	// ReasonRedisAuthFailed: Redis refused AUTH or SELECT.
	ReasonRedisAuthFailed = "RedisAuthFailed"
	// ReasonRedisError: another Redis error; the message names it.
	ReasonRedisError = "RedisError"
	// ReasonSecretNotFound: the Secret or its key named by
	// spec.redis.passwordSecretRef (or a Secret named by a ConfigKeyRef)
	// does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonConfigMapNotFound: a ConfigMap or its key named by a
	// ConfigKeyRef does not exist.
	ReasonConfigMapNotFound = "ConfigMapNotFound"
	// ReasonInvalidHomeserverConfig: the homeserver config does not parse
	// or its stream_writers are malformed.
	ReasonInvalidHomeserverConfig = "InvalidHomeserverConfig"
	// ReasonInvalidCA: the CA bundle holds no PEM certificate.
	ReasonInvalidCA = "InvalidCA"

	// ReasonAllWritersAnnounced: every expected writer announced, none is
	// unexpected, no gaps.
	ReasonAllWritersAnnounced = "AllWritersAnnounced"
	// ReasonMissingWriter: a configured writer has not announced its stream
	// since the last REPLICATE settled (element-hq/synapse#20080).
	ReasonMissingWriter = "MissingWriter"
	// ReasonUnexpectedWriter: an instance writes a stream stream_writers does
	// not give it.
	ReasonUnexpectedWriter = "UnexpectedWriter"
	// ReasonGaps: a writer's POSITION showed rows the watcher never saw.
	ReasonGaps = "Gaps"
	// ReasonWritersUnknown: nothing is known about writers (not subscribed,
	// or nothing heard yet).
	ReasonWritersUnknown = "WritersUnknown"

	// ReasonOutputBufferHigh: a pub/sub client's Redis output buffer is
	// above half the limit; Redis disconnects it at the limit.
	ReasonOutputBufferHigh = "OutputBufferHigh"
)
