//go:build tools

// Package tools pins promtool, which unit-tests the chart's alerting rules,
// built from the Prometheus Go module.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
