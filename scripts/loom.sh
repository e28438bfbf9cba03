#!/usr/bin/env bash
# Runs every loom model of the workspace: each `<crate>/tests/loom*.rs` is built with
# `--cfg gpusched_loom` (our own cfg: a bare `--cfg loom` breaks event-listener) in release
# mode with debug assertions, in the separate target dir target/loom, and run as
#   cargo test --release --target-dir target/loom -p <package> --test <file stem> [ARGS...]
# The package name is read from the crate's Cargo.toml. Extra arguments go to every test
# binary (a name filter, `--nocapture`); loom's own variables (LOOM_MAX_PREEMPTIONS,
# LOOM_MAX_BRANCHES, LOOM_LOG, LOOM_CHECKPOINT_FILE) pass through the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

# The `name` of the [package] table of a Cargo.toml (empty for a virtual manifest).
package_name() {
    awk '/^[[:space:]]*\[/ { in_pkg = ($0 ~ /^[[:space:]]*\[package\][[:space:]]*$/) }
         in_pkg && /^[[:space:]]*name[[:space:]]*=/ {
             sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit
         }' "$1"
}

mapfile -t models < <(find . \( -name target -o -name .git \) -prune -o \
    -type f -path '*/tests/loom*.rs' -print | sed 's|^\./||' | sort)


export RUSTFLAGS="--cfg gpusched_loom${RUSTFLAGS:+ $RUSTFLAGS}"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
ran=0
for model in "${models[@]}"; do
    crate_dir=$(dirname "$(dirname "$model")")
    manifest="$crate_dir/Cargo.toml"
    pkg=""
    [ -f "$manifest" ] && pkg=$(package_name "$manifest")
    if [ -z "$pkg" ]; then
        echo "[loom] skipping $model: $crate_dir has no package manifest"
        continue
    fi
    stem=$(basename "$model" .rs)
    echo "[loom] $model: cargo test --release --target-dir target/loom -p $pkg --test $stem $*"
    cargo test --release --target-dir target/loom -p "$pkg" --test "$stem" -- "$@"
    ran=$((ran + 1))
done
# In-crate models (they need crate internals): modules named `loom_model` under
# `#[cfg(all(test, gpusched_loom))]` in a crate's src/, run through its lib test binary.
while IFS= read -r manifest; do
    crate_dir=$(dirname "$manifest")
    if grep -rqs 'cfg(all(test, gpusched_loom))' "$crate_dir/src"; then
        pkg=$(package_name "$manifest")
        echo "[loom] $crate_dir/src (in-crate loom_model): cargo test --release --target-dir target/loom -p $pkg --lib loom_model $*"
        cargo test --release --target-dir target/loom -p "$pkg" --lib loom_model -- "$@"
        ran=$((ran + 1))
    fi
done < <(find . \( -name target -o -name .git \) -prune -o -mindepth 2 -maxdepth 2 -type f -name Cargo.toml -print | sort)
echo "[loom] $ran model file(s) passed"
