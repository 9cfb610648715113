# piratebay-sync peer image: build with the Rust toolchain, run on slim Debian.
#   docker build -t piratebay-sync .
#   docker run --rm -v "$PWD/dataset:/data" -p 7070:7070 piratebay-sync \
#     serve --etcd http://etcd:2379 --dataset /data --listen 0.0.0.0:7070

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin piratebay-sync \
 && cp target/release/piratebay-sync /usr/local/bin/piratebay-sync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data /state
COPY --from=build /usr/local/bin/piratebay-sync /usr/local/bin/piratebay-sync
ENV PIRATEBAY_STATE_DIR=/state
VOLUME ["/data", "/state"]
EXPOSE 7070
ENTRYPOINT ["piratebay-sync"]
CMD ["serve", "--etcd", "http://etcd:2379", "--dataset", "/data", "--listen", "0.0.0.0:7070"]
