# syntax=docker/dockerfile:1.7
# hookrelay's server image: the binary on a root file system assembled from pinned
# Debian 12 packages (glibc, libgcc_s, CA certificates; see scripts/image-rootfs and
# image/packages.lock), non-root (65532), no shell, read-only-root friendly, with the
# Rust dependency list embedded in the binary by cargo-auditable (the SBOM that
# `syft`, `trivy` and `cargo audit bin` read).
#
#   docker build -t hookrelay .                               # builds everything here
#   scripts/image                                             # the same image, with buildah
#
# The two differ only in where the root file system is assembled: by default in the
# `compiled` stage below; scripts/image assembles it on the host with the same script
# and packages (no base image can be pulled there) and builds with --build-arg
# ROOTFS=prebuilt. The Envoy sidecar image that matches the Envoy the tests run:
# envoyproxy/envoy:v1.40.0.
ARG ROOTFS=compiled

# The builder: pinned by its exact Rust and Debian release (bookworm, as the packages).
FROM rust:1.95.0-slim-bookworm AS compiled
RUN cargo install cargo-auditable --locked --version 0.7.7
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY bench ./bench
COPY proto ./proto
COPY migrations ./migrations
# The web console's committed bundle, embedded into the binary (no Node.js here).
COPY console/dist ./console/dist
COPY src ./src
COPY image ./image
COPY scripts/image-rootfs ./scripts/image-rootfs
# Dependencies and build outputs live in BuildKit cache mounts, so a source-only change
# rebuilds only hookrelay itself. jemalloc, the server's allocator, builds with make.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends make=4.3-4.1 \
    && cargo auditable build --release --locked --bin hookrelay \
    && scripts/image-rootfs /out/rootfs target/release/hookrelay

# scripts/image's context: the root file system it assembled.
FROM scratch AS prebuilt
COPY rootfs /out/rootfs

FROM ${ROOTFS} AS build

FROM scratch
COPY --from=build /out/rootfs /
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hookrelay" \
      org.opencontainers.image.description="Multi-tenant webhook relay: durable ingest, gRPC streams to private networks" \
      org.opencontainers.image.source="https://github.com/hookrelay/hookrelay" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The nonroot user of /etc/passwd. Nothing is written outside /tmp (an emptyDir in the chart).
USER 65532:65532
ENV HOOKRELAY_DATA_DIR=/tmp/hookrelay \
    HOOKRELAY_HTTP_ADDR=0.0.0.0:8081 \
    HOOKRELAY_GRPC_ADDR=0.0.0.0:50051
EXPOSE 8081 50051
ENTRYPOINT ["/usr/local/bin/hookrelay"]
CMD ["serve", "--no-migrate"]
