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

// Package v1alpha1 holds the tcprepl API: ReplicationMaster and
// ReplicationWorker in the replication.tcprepl.io group.
// +kubebuilder:object:generate=true
// +groupName=replication.tcprepl.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "replication.tcprepl.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme. It
	// uses apimachinery only, so that clients can import this package
	// without controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ReplicationMaster{}, &ReplicationMasterList{},
		&ReplicationWorker{}, &ReplicationWorkerList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
