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

// Condition reasons of a master on PostgreSQL storage with standbys. Like
// the others they are part of the API: alerts and scripts match on them.
const (
	// ReasonPostgresSecretNotFound: the Secret holding the PostgreSQL URI
	// (spec.storage.postgres.uriSecretRef, or the CloudNativePG Cluster's
	// "<cluster>-app" Secret) does not exist; the master pods cannot start
	// until it does.
	ReasonPostgresSecretNotFound = "PostgresSecretNotFound"
	// ReasonPostgresSecretKeyMissing: that Secret exists but has no such
	// key, or the key is empty.
	ReasonPostgresSecretKeyMissing = "PostgresSecretKeyMissing"
	// ReasonTakeover: another master pod became the active one (the one
	// before failed or lost the log's lock); status.lastTakeoverTime says
	// when. It stays the Available reason until availability changes again.
	ReasonTakeover = "Takeover"
)
