# tcprepl Makefile. Every tool the tests need is built from the Go module
# proxy into bin/ (ignored by git), keyed by version, so only the first run
# pays for it.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
BIN := $(abspath bin)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/tcprepl/tcprepl/internal/version.Version=$(VERSION) -X github.com/tcprepl/tcprepl/internal/version.Commit=$(COMMIT)

KUBE_VERSION := 1.37.2
ETCD_VERSION := 3.6.16
HELM_VERSION := 3.22.0
CONTROLLER_TOOLS_VERSION := 0.23.0
GOLANGCI_LINT_VERSION := 2.15.0
# The Prometheus Go module's version (v0.316.0 is Prometheus 3.16.0), for promtool.
PROMETHEUS_VERSION := 0.316.0

# KUBEBUILDER_ASSETS layout for envtest: kube-apiserver, etcd and kubectl in one folder.
K8S_BIN := $(BIN)/k8s/$(KUBE_VERSION)
KUBE_APISERVER := $(K8S_BIN)/kube-apiserver
KUBE_CONTROLLER_MANAGER := $(K8S_BIN)/kube-controller-manager
KUBECTL := $(K8S_BIN)/kubectl
ETCD := $(K8S_BIN)/etcd
HELM := $(BIN)/helm-v$(HELM_VERSION)
CONTROLLER_GEN := $(BIN)/controller-gen-v$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT := $(BIN)/golangci-lint-v$(GOLANGCI_LINT_VERSION)
PROMTOOL := $(BIN)/promtool-v$(PROMETHEUS_VERSION)
PROMQL_SELECTORS := $(BIN)/promql-selectors-v$(PROMETHEUS_VERSION)
TCPREPL := $(BIN)/tcprepl

export KUBEBUILDER_ASSETS := $(K8S_BIN)
export TCPREPL_KUBE_CONTROLLER_MANAGER := $(KUBE_CONTROLLER_MANAGER)
export TCPREPL_KUBECTL := $(KUBECTL)
export TCPREPL_HELM := $(HELM)
export TCPREPL_PROMTOOL := $(PROMTOOL)
export TCPREPL_PROMQL_SELECTORS := $(PROMQL_SELECTORS)

.PHONY: all
all: build

##@ Build

.PHONY: build
build: ## Build bin/tcprepl.
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(TCPREPL) ./cmd/tcprepl

$(TCPREPL): build

# The kubectl plugin is the same binary under the name kubectl looks for on
# PATH: `kubectl tcprepl status NAME` runs kubectl-tcprepl.
PREFIX ?= /usr/local

.PHONY: install-plugin
install-plugin: build ## Install bin/tcprepl as $(PREFIX)/bin/kubectl-tcprepl (default PREFIX=/usr/local, or e.g. PREFIX=~/.local): kubectl tcprepl status|probe NAME.
	install -d $(PREFIX)/bin
	install -m 0755 $(TCPREPL) $(PREFIX)/bin/kubectl-tcprepl
	@echo "installed $(PREFIX)/bin/kubectl-tcprepl; with $(PREFIX)/bin on PATH, run: kubectl tcprepl status NAME"

# The image: built without a container engine by hack/image (its own module,
# so go-containerregistry stays out of the product's dependencies). One
# commit gives one digest: the creation time is the commit's.
IMAGE_REPO ?= ghcr.io/tcprepl/tcprepl
IMAGE_TAG ?= $(VERSION)
IMAGE_ARCH ?= amd64
IMAGE_DIR := $(BIN)/image
IMAGE_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: image
image: ## Build the OCI image: bin/image/oci (OCI layout) and bin/image/tcprepl.tar (docker load, kind load image-archive, crane push).
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_DIR)/tcprepl-linux-$(IMAGE_ARCH) ./cmd/tcprepl
	cd hack/image && $(GO) run . --binary $(IMAGE_DIR)/tcprepl-linux-$(IMAGE_ARCH) --arch $(IMAGE_ARCH) \
	  --ca-bundle $(IMAGE_CA_BUNDLE) --ref $(IMAGE_REPO):$(IMAGE_TAG) --created $(SOURCE_DATE_EPOCH) \
	  --version $(VERSION) --revision $(COMMIT) \
	  --oci-layout $(IMAGE_DIR)/oci --tarball $(IMAGE_DIR)/tcprepl.tar

.PHONY: test-image
test-image: ## Tests of the image builder (its own module): reproducible digest, agreement with the Dockerfile.
	cd hack/image && $(GO) test -race -count=1 ./...

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC into config/ and the chart.
	$(CONTROLLER_GEN) rbac:roleName=tcprepl-operator crd paths=./api/... paths=./controllers/... output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	mkdir -p charts/tcprepl/crds && cp config/crd/bases/*.yaml charts/tcprepl/crds/

##@ Tools (built from the Go module proxy, cached in bin/)

.PHONY: tools
tools: $(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER) $(KUBECTL) $(ETCD) $(HELM) $(CONTROLLER_GEN) $(GOLANGCI_LINT) $(PROMTOOL) $(PROMQL_SELECTORS) ## Build every tool the tests use.

# Short names for the tool binaries: `make controller-gen`, `make helm`, ...
.PHONY: kube-apiserver kube-controller-manager kubectl etcd helm controller-gen golangci-lint promtool promql-selectors
kube-apiserver: $(KUBE_APISERVER)
kube-controller-manager: $(KUBE_CONTROLLER_MANAGER)
kubectl: $(KUBECTL)
etcd: $(ETCD)
helm: $(HELM)
controller-gen: $(CONTROLLER_GEN)
golangci-lint: $(GOLANGCI_LINT)
promtool: $(PROMTOOL)
promql-selectors: $(PROMQL_SELECTORS)

$(KUBE_APISERVER):
	cd hack/tools/kube && $(GO) build -o $@ k8s.io/kubernetes/cmd/kube-apiserver
$(KUBE_CONTROLLER_MANAGER):
	cd hack/tools/kube && $(GO) build -o $@ k8s.io/kubernetes/cmd/kube-controller-manager
$(KUBECTL):
	cd hack/tools/kube && $(GO) build -o $@ k8s.io/kubernetes/cmd/kubectl
$(ETCD):
	cd hack/tools/etcd && $(GO) build -o $@ .
$(HELM):
	cd hack/tools/helm && $(GO) build -o $@ helm.sh/helm/v3/cmd/helm
# promtool unit-tests the chart's alerting rules (test/alerts).
$(PROMTOOL):
	cd hack/tools/prometheus && $(GO) build -o $@ github.com/prometheus/prometheus/cmd/promtool
# Prometheus's PromQL parser, for the Grafana dashboard's test (test/monitoring).
$(PROMQL_SELECTORS):
	cd hack/tools/prometheus && $(GO) build -o $@ ./promql-selectors
$(CONTROLLER_GEN):
	GOBIN=$(BIN)/.gobin-controller-gen $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@v$(CONTROLLER_TOOLS_VERSION)
	mv $(BIN)/.gobin-controller-gen/controller-gen $@
$(GOLANGCI_LINT):
	GOBIN=$(BIN)/.gobin-golangci-lint $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/.gobin-golangci-lint/golangci-lint $@

##@ Test

.PHONY: test
test: tools build image test-image ## Run every test with the race detector: unit, envtest, end-to-end.
	TCPREPL_E2E_REQUIRED=1 TCPREPL_BINARY=$(TCPREPL) TCPREPL_IMAGE_LAYOUT=$(IMAGE_DIR)/oci $(GO) test -race -count=1 -timeout 40m ./...

.PHONY: test-full-size
test-full-size: ## The million-row catch-up tests at full size, once, without -race (the race build scales them down).
	$(GO) test -count=1 -timeout 10m -v -run '^(TestCatchUpMillionRows|TestCatchUpMillionRowsBehind)$$' ./internal/master/ ./internal/replication/ | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go:'

.PHONY: test-short
test-short: ## Unit tests only (no envtest, no end-to-end).
	$(GO) test -race -short ./...

FUZZTIME ?= 20s
.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME.
	@for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

.PHONY: lint
lint: $(GOLANGCI_LINT) ## gofmt, go vet and golangci-lint.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	cd hack/image && $(GO) vet ./... && $(GOLANGCI_LINT) run ./...

.PHONY: bench
bench: ## Run the Go benchmarks.
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Demo and end-to-end (section owned by the shipping work: test/e2e, hack/demo)

# Every binary the local cluster needs, built from the Go module proxy.
E2E_TOOLS := $(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER) $(KUBECTL) $(ETCD) $(HELM)

.PHONY: test-e2e
test-e2e: $(E2E_TOOLS) build image ## End-to-end on a local cluster of real parts: chart, operator, master, workers (pods from the image), faults.
	TCPREPL_E2E_REQUIRED=1 TCPREPL_BINARY=$(TCPREPL) TCPREPL_IMAGE_LAYOUT=$(IMAGE_DIR)/oci $(GO) test -count=1 -timeout 20m -v ./test/cluster/ ./test/kubelet/ ./test/e2e/

.PHONY: demo
demo: $(E2E_TOOLS) build image ## Local cluster + chart + operator + sample topology (pods from the image); publishes rows, prints kubectl get and tcprepl probe.
	TCPREPL_BINARY=$(TCPREPL) TCPREPL_IMAGE_LAYOUT=$(IMAGE_DIR)/oci hack/demo.sh $(DEMO_ARGS)
