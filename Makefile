# gpusched workspace tasks. `make demo` and `make test` are the README's two commands: each
# first runs scripts/setup.sh (idempotent: installs the Vulkan packages and cargo-nextest only
# when missing). Every cargo step sources scripts/env.sh (pins Vulkan to lavapipe unless a
# device is requested explicitly).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := . scripts/env.sh &&

.PHONY: help setup demo test nextest doctest loom bench-test bench fmt-check clippy ci

help:
	@echo "make demo       set up, then run the demo (a fence pipeline example for now)"
	@echo "make test       set up, then nextest (unit + integration), doctests, loom models, benches in test mode"
	@echo "make setup      install what is missing (scripts/setup.sh)"
	@echo "make nextest | doctest | loom | bench-test   one step of 'make test'"
	@echo "make bench      run the criterion benches for real"
	@echo "make fmt-check | clippy   the lint steps of .ci/run"
	@echo "make ci         what CI runs (.ci/run)"

setup:
	bash scripts/setup.sh

# The main job. Until the Vulkan backend exists this is the fence pipeline example.
demo: setup
	$(ENV) cargo run --release -p gpusched-fence --example pipeline

# The whole test suite, in order. Steps are recipe lines (not prerequisites) so that `make -j`
# cannot reorder them.
test: setup
	$(MAKE) --no-print-directory nextest
	$(MAKE) --no-print-directory doctest
	$(MAKE) --no-print-directory loom
	$(MAKE) --no-print-directory bench-test

nextest:
	$(ENV) cargo nextest run --workspace --profile ci --no-tests=warn

# nextest does not run doctests. The README example lives in fence/examples/readme.rs: check
# that the README shows it verbatim, and run it.
doctest:
	$(ENV) cargo test --workspace --doc
	bash scripts/check-readme.sh
	$(ENV) cargo run -q -p gpusched-fence --example readme

loom:
	$(ENV) bash scripts/loom.sh

# Bench targets only (`--bench '*'`): without it cargo would also rerun every lib's unit tests
# in the bench profile.
bench-test:
	$(ENV) cargo bench --workspace --bench '*' -- --test

bench:
	$(ENV) cargo bench --workspace --bench '*'

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

ci:
	bash .ci/run
