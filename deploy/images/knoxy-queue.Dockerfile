# knoxy-queue, small and non-root: built in Rust's image, run from distroless (glibc, no shell).
#   docker build -f deploy/images/knoxy-queue.Dockerfile -t ghcr.io/knoxy-dev/knoxy-queue .
FROM rust:1-bookworm AS build
# Pingora's build needs cmake.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin knoxy-queue

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/knoxy-queue /knoxy-queue
USER 65532:65532
ENTRYPOINT ["/knoxy-queue"]
