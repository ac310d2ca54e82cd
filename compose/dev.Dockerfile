# syntax=docker/dockerfile:1
# Development image for compose.dev.yml (not for production: that is the
# Dockerfile at the root). A debug build whose cargo registry and target
# directory live in BuildKit cache mounts, so the rebuild that
# `docker compose watch` starts on a source change is incremental.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked -p tallow-signaling --bin tallow-server \
    && cp target/debug/tallow-server /usr/local/bin/tallow-server

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent tallow
COPY --from=build /usr/local/bin/tallow-server /usr/local/bin/tallow-server
# Owned by the server's user so that `watch` can sync web/ changes into it.
COPY --chown=10001:10001 web /srv/tallow/web
ENV TALLOW_WEB_ROOT=/srv/tallow/web
USER 10001
EXPOSE 8080 3478/udp 3478/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tallow-server"]
