# Builds both binaries of Inside; docker-compose.yml runs them.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p inside-gateway -p inside-workers

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gateway /src/target/release/worker /usr/local/bin/
COPY migrations /srv/migrations
WORKDIR /srv
EXPOSE 8000 8001
CMD ["gateway"]
