# piratebay-sync: the usual entry points.
#
#   make run     install etcd if missing, build, start/reuse a local etcd, serve /tmp/dataset
#   make test    install test tools if missing, run the whole suite (nextest if present)
#   make bench   build release, run every benches/bench_*.py (or BENCH=name)
#   make lint    rustfmt check + clippy with warnings as errors
#
# Variables: ARGS="..." extra flags for `serve`; BENCH=list runs only
# benches/bench_list.py; CARGO=cargo.

CARGO ?= cargo
ARGS ?=
BENCH ?=
BIN := target/release/piratebay-sync

.PHONY: all run test bench soak lint build release clean deps-etcd deps-test deps-bench

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

test: deps-test
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "make test: cargo test --doc, then cargo nextest run"; \
		$(CARGO) test --doc && $(CARGO) nextest run --no-fail-fast; \
	else \
		echo "make test: cargo test (install cargo-nextest for per-test timeouts)"; \
		$(CARGO) test --no-fail-fast; \
	fi

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

soak: release
	@if [ -f benches/soak.py ]; then exec python3 benches/soak.py; \
	else echo "make soak: not yet (benches/soak.py does not exist)"; exit 1; fi

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
