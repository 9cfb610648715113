# piratebay-sync: the usual entry points.
#
#   make run     install etcd if missing, build, start/reuse a local etcd, serve /tmp/dataset
#   make test    install test tools if missing, run the whole suite (nextest if present),
#                then test-compose
#   make test-compose  docker-compose.yml and the Dockerfile on a real Docker engine (root)
#   make bench   build release, run every benches/bench_*.py (or BENCH=name)
#   make bench-lan  build release, the LAN lab bench only (root: network namespaces)
#   make bench-scale  build release, the at-scale table (benches/scale_table.py)
#   make soak    build release, 20 peers + 3 etcd members under chaos for 5 min
#   make lint    rustfmt check + clippy with warnings as errors + make doc + the import
#                graph (no circle, at most 2 imports up ARCHITECTURE.md's layers)
#   make doc     the crate's docs (cargo doc --no-deps), rustdoc warnings as errors
#
# Variables: ARGS="..." extra flags for `serve`; BENCH=list runs only
# benches/bench_list.py; SOAK_ARGS="..." flags for benches/soak.py; CARGO=cargo.

CARGO ?= cargo
ARGS ?=
BENCH ?=
SOAK_ARGS ?=
BIN := target/release/piratebay-sync

.PHONY: all run test test-compose bench bench-lan bench-sim bench-scale soak lint doc build release clean deps-etcd deps-test deps-bench

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

deps-etcd:
	@scripts/deps.sh etcd

deps-test:
	@scripts/deps.sh test

deps-bench:
	@scripts/deps.sh bench

run: deps-etcd release
	@scripts/ensure-etcd.sh
	@mkdir -p $${PIRATEBAY_DATASET:-/tmp/dataset}
	exec $(BIN) serve $(ARGS)

# The etcd-facing tests run a second time against etcd 3.5 (Debian ships 3.4).
ETCD_TESTS := etcd:: discovery:: peer::

test: deps-test
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "make test: cargo test --doc, then cargo nextest run"; \
		$(CARGO) test --doc && $(CARGO) nextest run --no-fail-fast || exit 1; \
		etcd35=$$(scripts/etcd35.sh) || { echo "make test: etcd 3.5 unavailable, its pass skipped"; exit 0; }; \
		echo "make test: etcd-facing tests again against $$etcd35"; \
		PIRATEBAY_TEST_ETCD_BIN=$$etcd35 $(CARGO) nextest run --no-fail-fast -E 'test(/^(etcd|discovery|peer)::/)'; \
	else \
		echo "make test: cargo test (install cargo-nextest for per-test timeouts)"; \
		$(CARGO) test --no-fail-fast || exit 1; \
		etcd35=$$(scripts/etcd35.sh) || { echo "make test: etcd 3.5 unavailable, its pass skipped"; exit 0; }; \
		PIRATEBAY_TEST_ETCD_BIN=$$etcd35 $(CARGO) test --no-fail-fast --test it -- $(ETCD_TESTS); \
	fi
	@$(MAKE) --no-print-directory test-compose

# etcd and a peer from docker-compose.yml on a real Docker engine, checked
# from the host (scripts/compose-test.sh says what; root, as CI runs it).
test-compose:
	@CARGO="$(CARGO)" scripts/compose-test.sh

bench: deps-bench release
	@set -e; \
	if [ -n "$(BENCH)" ]; then files="benches/bench_$(BENCH).py"; \
	else files="$$(ls benches/bench_*.py)"; fi; \
	status=0; \
	for f in $$files; do \
		echo "== $$f"; \
		python3 "$$f" || status=1; \
	done; \
	exit $$status

# Multi-source and swarm downloads on the LAN lab (400 Mbit/s links):
# the figures to trust for a LAN. Also part of `make bench`.
bench-lan: deps-bench release
	python3 benches/bench_lan.py

# The swarm simulator (src/sim/, compiled for tests only): one seed and
# 100, 1,000, 10,000 hosts, equal links and 10 % at 1/10 of the speed
# (10,000 with equal links only unless SIM_CURVE is given; ~11 minutes).
# One case by hand: SIM_HOSTS=... cargo test --release --lib sim::tests::explore -- --ignored --nocapture
bench-sim:
	$(CARGO) test --release --lib sim::tests::curve -- --ignored --nocapture --test-threads 1

# Issue 12's rows (index at 100k files, catalog, 1,000 peers, idle etcd
# load, one-file get on 50 peers, batches, fair share), before and after,
# beside their references. Sizes: BENCH_SCALE_FILES, BENCH_GET_PEERS,
# BENCH_BATCH_FILES, BENCH_FAIR_MIB, BENCH_RUNS; BENCH_SCALE_PARTS picks.
bench-scale: deps-bench release
	python3 benches/scale_table.py

# Defaults: 20 peers, 5 minutes, 200 downloads. Shorter:
#   make soak SOAK_ARGS="--peers 6 --minutes 1 --downloads 20"
soak: deps-etcd release
	exec python3 benches/soak.py $(SOAK_ARGS)

lint: doc
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	python3 scripts/import-circles.py --upward

# The API docs are the library's user guide: a broken link or a public item
# without a doc comment (#![deny(missing_docs)]) fails the build.
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:
	$(CARGO) clean
