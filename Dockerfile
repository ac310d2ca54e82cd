# tallow-server image: build with the Rust toolchain, run on a slim Debian.
# It carries both binaries: tallow-server (signaling, embedded relay, web
# client) and tallow-relay (the relay as its own workload, k8s/base/relay.yaml).
# scripts/check-dockerfile.sh checks that the build stage gets every
# workspace member and that each binary the manifests run is copied.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY signaling signaling
COPY relay relay
COPY peer peer
COPY cli cli
COPY bench bench
COPY web web
RUN cargo build --release --locked -p tallow-signaling --bin tallow-server \
    -p tallow-relay --bin tallow-relay

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent tallow
COPY --from=build /src/target/release/tallow-server /usr/local/bin/tallow-server
COPY --from=build /src/target/release/tallow-relay /usr/local/bin/tallow-relay
COPY web /srv/tallow/web
ENV TALLOW_WEB_ROOT=/srv/tallow/web \
    TALLOW_LISTEN=0.0.0.0:8080 \
    LOG_FORMAT=json
USER 10001
EXPOSE 8080 3478/udp 3478/tcp
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/api/health || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tallow-server"]
