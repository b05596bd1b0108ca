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
	// ConditionConnected: every ready worker pod has a connection to the
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

	// ReasonMasterNotFound: spec.masterRef names no ReplicationMaster.
	ReasonMasterNotFound = "MasterNotFound"
	// ReasonAllReplicasReady: every desired worker pod is ready.
	ReasonAllReplicasReady = "AllReplicasReady"
	// ReasonReplicasNotReady: some desired worker pods are not ready.
	ReasonReplicasNotReady = "ReplicasNotReady"
	// ReasonAllConnected: every ready worker pod is connected.
	ReasonAllConnected = "AllConnected"
	// ReasonNotConnected: some ready worker pods have no connection.
	ReasonNotConnected = "NotConnected"
	// ReasonConnectionsUnknown: the master's connection table cannot be
	// read (probe not connected, or HTTP API unreachable).
	ReasonConnectionsUnknown = "ConnectionsUnknown"
	// ReasonLagAboveThreshold: a stream is more than maxLagSeconds behind.
	ReasonLagAboveThreshold = "LagAboveThreshold"
	// ReasonLagWithinThreshold: every stream is within maxLagSeconds.
	ReasonLagWithinThreshold = "LagWithinThreshold"
)
