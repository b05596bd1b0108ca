#!/usr/bin/env bash
# `make demo`: build the demo driver and run it. The driver starts a local
# cluster (etcd, kube-apiserver, kube-controller-manager built from the Go
# module proxy by `make tools`), the test kubelet, the chart and the operator,
# and removes all of it on exit. The trap is a second line of defence: the
# driver's processes also die with it (they are started with PDEATHSIG).
set -euo pipefail
cd "$(dirname "$0")/.."

demo_bin="$(mktemp -d)/tcprepl-demo"
cleanup() {
  rm -rf "$(dirname "$demo_bin")"
}
trap cleanup EXIT

go build -o "$demo_bin" ./hack/demo
"$demo_bin" "$@"
