#!/usr/bin/env bash
# Checks that the README's usage example is exactly `fn main` of fence/examples/readme.rs (the
# example itself is compiled by clippy/tests and run by `make doctest`). The README block is
# the ```rust block that follows the line `<!-- example: fence/examples/readme.rs -->`.
set -euo pipefail
cd "$(dirname "$0")/.."

example=fence/examples/readme.rs
marker="<!-- example: $example -->"
grep -qxF "$marker" README.md || { echo "[readme] marker '$marker' missing from README.md" >&2; exit 1; }

in_readme=$(awk -v m="$marker" '
    $0 == m { found = 1; next }
    found && /^```rust$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }' README.md)
# The README shows the `use` lines and `fn main` of the example, without its `//!` header.
in_example=$(grep -v '^//!' "$example" | sed '/./,$!d')

if [ "$in_readme" != "$in_example" ]; then
    echo "[readme] the README example differs from $example:" >&2
    diff <(printf '%s\n' "$in_readme") <(printf '%s\n' "$in_example") >&2 || true
    exit 1
fi
echo "[readme] README example matches $example"
