# syntax=docker/dockerfile:1.7
# hookrelay: one static-ish binary on distroless, non-root, read-only-root friendly.
#   docker build -t hookrelay .
# The Envoy sidecar image that matches the Envoy the tests run: envoyproxy/envoy:v1.40.0.
#
# Base images are pinned: the builder by its exact Rust and Debian release, the runtime
# by digest (Debian 12, glibc 2.36, the same as the builder's bookworm). Refresh the
# digest with `docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot`.

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Dependencies and build outputs live in BuildKit cache mounts, so a source-only change
# rebuilds only hookrelay itself.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY bench ./bench
COPY proto ./proto
COPY migrations ./migrations
# The web console's committed bundle, embedded into the binary (no Node.js here).
COPY console/dist ./console/dist
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hookrelay \
    && install -D -m 0755 target/release/hookrelay /out/hookrelay

FROM gcr.io/distroless/cc-debian12@sha256:899570acf85a1f1362862a9ea4d9e7b1827cb5c62043ba5b170b21de89618608
COPY --from=build /out/hookrelay /usr/local/bin/hookrelay
# distroless's nonroot user. Nothing is written outside /tmp (an emptyDir in the chart).
USER 65532:65532
ENV HOOKRELAY_DATA_DIR=/tmp/hookrelay \
    HOOKRELAY_HTTP_ADDR=0.0.0.0:8081 \
    HOOKRELAY_GRPC_ADDR=0.0.0.0:50051
EXPOSE 8081 50051
ENTRYPOINT ["/usr/local/bin/hookrelay"]
CMD ["serve", "--no-migrate"]
