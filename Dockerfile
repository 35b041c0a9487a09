# syntax=docker/dockerfile:1
# sqlease container image: a Rust builder stage, then a small Debian runtime
# running as an unprivileged user.
#
#   docker build -t sqlease .
#   docker run --rm -v ./sqlease.toml:/etc/sqlease/sqlease.toml:ro sqlease

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# cargo loads the whole workspace even for one binary: copy every member
# (.dockerignore keeps target/ and .git out).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sqlease \
    && install -Dm755 target/release/sqlease /out/sqlease

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sqlease \
    && useradd --system --uid 10001 --gid sqlease --home-dir /nonexistent --shell /usr/sbin/nologin sqlease
COPY --from=build /out/sqlease /usr/local/bin/sqlease
COPY config/sqlease.example.toml /etc/sqlease/sqlease.example.toml
USER 10001:10001
# 3307: the MySQL listener; 9307: the admin listener (/healthz, /readyz, /metrics).
EXPOSE 3307 9307
ENV SQLEASE_CONFIG=/etc/sqlease/sqlease.toml
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["sqlease", "health", "--path", "/readyz"]
ENTRYPOINT ["sqlease"]
CMD ["run"]
