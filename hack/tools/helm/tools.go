//go:build tools

// Package tools pins the helm CLI the chart tests run, built from its Go module.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
