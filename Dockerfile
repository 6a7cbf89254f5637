# syntax=docker/dockerfile:1
# One image with both binaries of Inside: `gateway` (the default command) and `worker`.
# docker-compose.yml and deploy/k8s/ run it.
#
# The `deps` stage sees only Cargo.toml, Cargo.lock and the members' manifests, with stub
# sources (deploy/docker/stub-sources.sh): the crates are fetched and compiled there, so an
# edit to the code rebuilds only Inside's own crates. Every workspace member's Cargo.toml is
# listed below; scripts/check-dockerfile fails when one is missing (a new crate must be added).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS deps
WORKDIR /src
COPY deploy/docker/stub-sources.sh /usr/local/bin/stub-sources
COPY Cargo.toml Cargo.lock ./
# workspace members (scripts/check-dockerfile compares this list with Cargo.toml)
COPY schemas/Cargo.toml schemas/
COPY engine/Cargo.toml engine/
COPY settings/Cargo.toml settings/
COPY store/Cargo.toml store/
COPY bus/Cargo.toml bus/
COPY gateway/Cargo.toml gateway/
COPY workers/Cargo.toml workers/
COPY benches/Cargo.toml benches/
COPY process/Cargo.toml process/
COPY server/Cargo.toml server/
COPY testkit/Cargo.toml testkit/
RUN stub-sources \
 && cargo fetch --locked \
 && cargo build --release --locked --bin gateway --bin worker

FROM deps AS build
COPY . .
# COPY keeps the files' own times, which may be older than the stub build: make every
# source newer so cargo rebuilds Inside's crates from the real code.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin gateway --bin worker

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin inside \
 && mkdir -p /srv/data /models/ecapa \
 && chown inside /srv/data
COPY --from=build /src/target/release/gateway /src/target/release/worker /usr/local/bin/
WORKDIR /srv
USER 10001
# gateway BIND_ADDR, worker WORKER_BIND_ADDR (their defaults)
EXPOSE 8000 8001
# /livez of whichever binary runs here, on its default port
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["sh", "-c", "curl -fsS http://127.0.0.1:8000/livez || curl -fsS http://127.0.0.1:8001/livez || exit 1"]
CMD ["gateway"]
