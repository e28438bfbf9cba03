# gpusched workspace tasks. `make demo` and `make test` are the README's two commands: each
# first runs scripts/setup.sh (idempotent: installs the Vulkan packages and cargo-nextest only
# when missing). Every cargo step sources scripts/env.sh (pins Vulkan to lavapipe unless a
# device is requested explicitly).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := . scripts/env.sh &&

.PHONY: help setup demo demo-fence demo-test test nextest doctest examples doc features package loom \
	bench-test bench fmt-check clippy ci

help:
	@echo "make demo       set up, then run the demo: \`gpusched demo\` on the default Vulkan device"
	@echo "make demo-fence the fence pipeline example"
	@echo "make test       set up, then nextest (unit + integration), doctests, examples, rustdoc"
	@echo "                (-D warnings), the no-checker build, loom models, benches in test mode,"
	@echo "                cargo package of the published crates"
	@echo "make setup      install what is missing (scripts/setup.sh)"
	@echo "make nextest | doctest | examples | doc | features | loom | bench-test | package"
	@echo "                one step of 'make test'"
	@echo "make bench      run the benches for real and write benches/RESULTS.md (~10 min)"
	@echo "make fmt-check | clippy   the lint steps of .ci/run"
	@echo "make ci         what CI runs (.ci/run)"

setup:
	bash scripts/setup.sh

# The main job: `gpusched demo` on the default Vulkan device (lavapipe when there is no GPU),
# with the validation layer on and faults injected. The binary is the `gpusched-demo` package
# (demo/, not published), so gpusched-vulkan carries none of its command-line dependencies.
# Pass options with DEMO_ARGS="--clients 8 --rounds 100" (`gpusched demo --help` lists them).
DEMO_ARGS ?=
demo: setup
	$(ENV) cargo run --release -p gpusched-demo --bin gpusched -- \
		demo --validation $(DEMO_ARGS)

demo-fence: setup
	$(ENV) cargo run --release -p gpusched-fence --example pipeline

# The demo end to end with a small workload, faults included, its summary and trace checked
# (demo/tests/demo.rs; part of `make test`).
demo-test:
	$(ENV) cargo test -q -p gpusched-demo --test demo
	$(ENV) cargo run -q -p gpusched-fence --example pipeline

# The whole test suite, in order. Steps are recipe lines (not prerequisites) so that `make -j`
# cannot reorder them.
test: setup
	$(MAKE) --no-print-directory nextest
	$(MAKE) --no-print-directory doctest
	$(MAKE) --no-print-directory examples
	$(MAKE) --no-print-directory demo-test
	$(MAKE) --no-print-directory doc
	$(MAKE) --no-print-directory features
	$(MAKE) --no-print-directory loom
	$(MAKE) --no-print-directory bench-test
	$(MAKE) --no-print-directory package

# The workspace includes the demo package (demo/: its test runs the binary); with the Vulkan
# backend's `fault-injection` feature, so that its recovery tests (tests/recovery.rs) run too.
# The fault layer library (vk-fault-layer, a cdylib the Vulkan loader loads) is built first:
# the tests of other packages that enable it find it in target/debug/ (its own tests would
# build it anyway). In CI a test that cannot find it fails; elsewhere it prints SKIPPED.
nextest:
	$(ENV) cargo build -p vk-fault-layer
	$(ENV) cargo nextest run --workspace --profile ci --no-tests=warn \
		--features gpusched-vulkan/fault-injection

# nextest does not run doctests. The README example lives in fence/examples/readme.rs: check
# that the README shows it verbatim, and run it.
doctest:
	$(ENV) cargo test --workspace --doc
	bash scripts/check-readme.sh
	$(ENV) cargo run -q -p gpusched-fence --example readme

# The examples (scheduler/examples/, vulkan-backend/examples/): each checks its own outcome, exits non-zero on
# failure and finishes in about a second.
EXAMPLES := frame_loop_tokio frame_loop_smol priorities_and_hang checker_report custom_backend
examples:
	@set -e; for ex in $(EXAMPLES); do \
		echo "[examples] cargo run -q -p gpusched --example $$ex"; \
		$(ENV) cargo run -q -p gpusched --example $$ex; \
	done
	@set -e; for exec in block-on tokio smol; do \
		echo "[examples] cargo run -q -p gpusched-vulkan --example frame_loop -- $$exec (validation on)"; \
		$(ENV) GPUSCHED_VALIDATION=1 cargo run -q -p gpusched-vulkan --example frame_loop -- $$exec; \
	done
	@echo "[examples] cargo run -q -p gpusched-vulkan --example engine -- --frames 8 --out target/engine.png (validation on)"
	@$(ENV) GPUSCHED_VALIDATION=1 cargo run -q -p gpusched-vulkan --example engine -- \
		--frames 8 --out target/engine.png

# The API docs, with every rustdoc warning (broken intra-doc links included) an error.
doc:
	$(ENV) RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps \
		--features gpusched-vulkan/fault-injection

# The checker is a default feature; the scheduler must also build without it.
features:
	$(ENV) cargo build -p gpusched --no-default-features

# The four published crates (the demo, demo/, is `publish = false`) package and verify together (one `cargo package` call, so that
# gpusched-resv and gpusched resolve their unpublished workspace dependencies locally).
# Cargo unpacks that local registry into $CARGO_HOME/registry/src/<hash of its path>/ and
# reuses an unpacked crate of the same name and version: a clone at a path used before
# would verify against stale sources. So drop our own unpacked crates first.
CARGO_HOME ?= $(HOME)/.cargo
package:
	rm -rf $(CARGO_HOME)/registry/src/*/gpusched-[0-9]* \
		$(CARGO_HOME)/registry/src/*/gpusched-{fence,resv,vulkan}-[0-9]*
	$(ENV) cargo package --allow-dirty -p gpusched-fence -p gpusched-resv -p gpusched -p gpusched-vulkan

loom:
	$(ENV) bash scripts/loom.sh

# Bench targets only (`--bench '*'`): without it cargo would also rerun every lib's unit tests.
# Built in the dev profile (`--profile dev`): this step checks that every bench runs, not how
# fast; it reuses the test build instead of a second, optimised copy of every dependency
# (`make bench` measures in the bench profile).
bench-test:
	$(ENV) cargo bench --profile dev --workspace --bench '*' -- --test

# Every bench for real, with short measurement times (about 10 minutes on 2 cores); then
# checker_sched again with the checker compiled out (`--no-default-features`: cargo cannot
# build one binary both ways), both builds' checker summaries rerun alternately (3 rounds),
# and benches/RESULTS.md written from the numbers (scripts/bench-report.py). The full output
# stays in target/bench.log. Override the criterion options with BENCH_ARGS=...
BENCH_ARGS ?= --warm-up-time 1 --measurement-time 2 --sample-size 40 --noplot
BENCH_LOG := target/bench.log
bench:
	mkdir -p target && date +%s > target/bench.since
	$(ENV) cargo bench -p gpusched-benches --bench '*' -- $(BENCH_ARGS) 2>&1 | tee $(BENCH_LOG)
	$(ENV) cargo bench -p gpusched-benches --no-default-features --bench checker_sched -- \
		$(BENCH_ARGS) 2>&1 | tee -a $(BENCH_LOG)
	for round in 1 2 3; do \
		$(ENV) GPUSCHED_BENCH_SUMMARY_ONLY=1 cargo bench -q -p gpusched-benches \
			--bench checker_sched 2>&1 | tee -a $(BENCH_LOG); \
		$(ENV) GPUSCHED_BENCH_SUMMARY_ONLY=1 cargo bench -q -p gpusched-benches \
			--no-default-features --bench checker_sched 2>&1 | tee -a $(BENCH_LOG); \
	done
	python3 scripts/bench-report.py $(BENCH_LOG) target/criterion "$$(cat target/bench.since)" \
		benches/RESULTS.md

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --all-features -- -D warnings

ci:
	bash .ci/run
