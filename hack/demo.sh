#!/usr/bin/env bash
# `make demo`: build the demo driver and run it. The driver starts a local
# cluster (etcd, kube-apiserver, kube-controller-manager built from the Go
# module proxy by `make tools`), the test kubelet, the chart and the operator,
# and removes all of it when it exits, also on Ctrl-C or SIGTERM (its
# signal handler is the cleanup trap; exec hands it the signals directly).
# Its processes are started with PDEATHSIG, so even a SIGKILLed driver leaves
# no cluster behind.
# Last it shows a SynapseReplication watching a Synapse deployment emulated by
# `tcprepl synapse-emulate` (a hidden demo aid) on a local redis-server, with
# one configured stream writer that never announces; without redis-server
# installed that part is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/tcprepl-demo ./hack/demo
exec bin/tcprepl-demo "$@"
