//go:build tools

// Package tools pins the Kubernetes binaries the tests run: a real
// kube-apiserver, kube-controller-manager and kubectl, built from the Go
// module proxy because no prebuilt binaries can be downloaded here.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
