# syntax=docker/dockerfile:1
# One image for every role: `tcprepl operator|master|worker|probe`.
#
#   docker build -t ghcr.io/tcprepl/tcprepl:dev --build-arg VERSION=dev .
#
# `make image` builds the same image without Docker (hack/image, with
# go-containerregistry): same user, entrypoint, binary path, ports and
# labels, on the files of distroless/static:nonroot that tcprepl uses
# (passwd and group with nonroot 65532, the CA bundle, /tmp, /home/nonroot).
# hack/image's tests parse this file and fail when the two differ.
#
# The binary is static (CGO_ENABLED=0: Pebble and the rest are pure Go), so
# the runtime image is distroless with no shell or libc, running as the
# nonroot user (65532) that the chart and the operator's pods also set.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so that source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/tcprepl/tcprepl/internal/version.Version=${VERSION} -X github.com/tcprepl/tcprepl/internal/version.Commit=${COMMIT}" \
      -o /out/tcprepl ./cmd/tcprepl

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.source="https://github.com/tcprepl/tcprepl" \
      org.opencontainers.image.description="tcprepl: operator, master, worker and probe for Synapse-protocol replication" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
# On PATH, because the pods the operator creates (and the chart) run the
# command "tcprepl" rather than an absolute path.
COPY --from=build /out/tcprepl /usr/local/bin/tcprepl
USER 65532:65532
# Replication, master HTTP API, metrics (operator and worker), operator
# health: the defaults of the CRDs and of `tcprepl operator`.
EXPOSE 9092 9093 8080 8081
ENTRYPOINT ["/usr/local/bin/tcprepl"]
