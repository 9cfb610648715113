# piratebay-sync peer image: build with the Rust toolchain, run on slim Debian.
#
#   docker build -t piratebay-sync:local .
#   docker run --rm --network host -v "$PWD/dataset:/data" piratebay-sync:local \
#     serve --etcd http://127.0.0.1:2379 --dataset /data --listen 0.0.0.0:7070
#
# Build arguments (all optional):
#   RUST_IMAGE  the builder stage's image (default rust:1-bookworm)
#   BASE_IMAGE  the runtime stage's image (default debian:bookworm-slim)
#   PREBUILT    path, inside the build context, of a piratebay-sync binary
#               built for Debian 12 (bookworm) on the host; when set, the
#               builder stage copies it instead of running cargo, so
#               RUST_IMAGE can be any image with a shell (where no Rust image
#               can be pulled). .dockerignore lets only target/image/ through.
# `make test-compose` builds this file with all three set (no registry is
# reachable there); see README, "Docker compose".

ARG RUST_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG PREBUILT=
WORKDIR /src
# .dockerignore admits only Cargo.toml, Cargo.lock, src/ and target/image/.
COPY . .
RUN set -e; \
    if [ -n "$PREBUILT" ]; then \
      install -m 0755 "$PREBUILT" /usr/local/bin/piratebay-sync; \
    else \
      cargo build --release --locked --bin piratebay-sync; \
      install -m 0755 target/release/piratebay-sync /usr/local/bin/piratebay-sync; \
    fi; \
    /usr/local/bin/piratebay-sync --help >/dev/null

FROM ${BASE_IMAGE}
# No ca-certificates: https etcd endpoints are checked against the roots
# compiled into the binary (webpki-roots) or the PEM file --etcd-ca names.
COPY --from=build /usr/local/bin/piratebay-sync /usr/local/bin/piratebay-sync
ENV PIRATEBAY_STATE_DIR=/state \
    PIRATEBAY_DATASET=/data
VOLUME ["/data", "/state"]
EXPOSE 7070
# Exec form: the binary is PID 1 and gets `docker stop`'s SIGTERM itself,
# so it revokes its lease and leaves `list` at once.
ENTRYPOINT ["/usr/local/bin/piratebay-sync"]
CMD ["serve", "--etcd", "http://127.0.0.1:2379", "--dataset", "/data", "--listen", "0.0.0.0:7070"]
