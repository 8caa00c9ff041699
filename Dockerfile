# shardyard's image: one static `shardyard` binary (every component is a subcommand), non-root,
# on distroless' static base (no shell, no libc: the binary needs none).
#
#   docker build -t ghcr.io/shardyard/shardyard:0.1.0 .
#
# Without a Docker engine, `scripts/image` builds the same image as an OCI archive (CI does, and
# runs its entrypoint): `skopeo copy oci-archive:target/image/shardyard-0.1.0.oci.tar
# docker://REGISTRY/shardyard:0.1.0` pushes it, `ctr -n k8s.io images import` loads it into a
# node's containerd.

# The toolchain rust-toolchain.toml pins.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Static on the gnu target: the binary links nothing at run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p shardyard --target x86_64-unknown-linux-gnu && \
    cp target/x86_64-unknown-linux-gnu/release/shardyard /shardyard

# 65532:65532 ("nonroot"), the user the operator's pods run as (runAsUser 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /shardyard /usr/local/bin/shardyard
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/shardyard"]
