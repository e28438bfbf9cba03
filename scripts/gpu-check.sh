#!/usr/bin/env bash
# The GPU device check, in two halves (CONTRIBUTING.md, "Running on a GPU"):
#
#   scripts/gpu-check.sh build [OUTDIR]   on a build machine (no GPU needed; default OUTDIR:
#                                         target/gpu-check). Builds, in release, the Vulkan test
#                                         binaries, the fault suites, the Vulkan bench, the demo,
#                                         the fault layer and the device probe, strips them, and
#                                         bundles them with the Vulkan loader, validation layer
#                                         and vulkaninfo unpacked from Debian's packages, plus
#                                         OUTDIR/run.sh and its report formatter. Fails when the
#                                         bundle is over GPU_CHECK_MAX_BYTES (64 MiB: the device
#                                         tool's carry limit).
#   OUTDIR/run.sh RESULTS_DIR             on the GPU machine (only its driver installed): runs
#                                         everything within ~8 minutes and writes
#                                         RESULTS_DIR/RESULTS-gpu.md (see run.sh's header).
#
# The build half needs cargo, python3, strip, apt-get (`apt-get download`, no root needed; or
# the .deb files already in /var/cache/apt/archives) and dpkg-deb.
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[ "${1:-}" = build ] || usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${2:-$ROOT/target/gpu-check}
MAX_BYTES=${GPU_CHECK_MAX_BYTES:-67108864}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
cd "$ROOT"

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/tests" "$OUT/lib" "$OUT/vulkan"
LOG=$OUT/build.log
: >"$LOG"
say() { echo "[gpu-check build] $*" >&2; }

# Runs a cargo command with JSON messages and prints one line per artifact it built:
# `KIND NAME PATH` (KIND: the target kind, PATH: its executable, or its .so for a cdylib).
artifacts() {
    say "cargo $*"
    cargo "$@" --message-format json 2>>"$LOG" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact":
        continue
    kind, name = m["target"]["kind"][0], m["target"]["name"]
    if m.get("executable"):
        print(kind, name, m["executable"])
    elif kind == "cdylib":
        for f in m["filenames"]:
            if f.endswith(".so"):
                print(kind, name, f)
'
}

# Copies an executable into the bundle, stripped of its debug info (symbols stay, for
# readable backtraces).
take() {
    cp "$1" "$2"
    strip --strip-debug "$2"
}

. scripts/env.sh

# The Vulkan test suite (validation on by default in every one of them), the recovery suite
# (fault injection), cross-ring waits on the device (the GPU's several queues), the pumping
# thread's retirement, deadlines, external semaphores and adopted devices, the cross-crate
# fault suite and the fault layer's own tests. Left out: the shader check (it compares SPIR-V
# with glslc, a build-machine concern), the window test (an X server), the engine tests (their
# own instance; the size limit).
tests_of() {
    local prefix=$1
    shift
    artifacts test --release --no-run "$@" | while read -r kind name path; do
        case "$kind" in
            lib | test)
                take "$path" "$OUT/tests/$prefix-$name"
                echo "$prefix-$name"
                ;;
        esac
    done
}
{
    tests_of vulkan -p gpusched-vulkan --features fault-injection --lib \
        --test compute --test errors --test queues --test teardown --test recovery \
        --test cross_ring --test retire --test deadline --test semaphores --test adopt
    tests_of faults -p gpusched-tests --test fault_vulkan
    tests_of layer -p vk-fault-layer --test layer --test env_enable --test env_faults
} >"$OUT/tests/LIST"

# `take_one KIND NAME DEST cargo-args...`: builds and bundles the one artifact of that kind
# and name.
take_one() {
    local want_kind=$1 want_name=$2 dest=$3
    shift 3
    artifacts "$@" | while read -r kind name path; do
        if [ "$kind" = "$want_kind" ] && [ "$name" = "$want_name" ]; then
            take "$path" "$dest"
        fi
    done
}
take_one bench vulkan "$OUT/bin/bench-vulkan" bench --no-run -p gpusched-benches --bench vulkan
take_one bin gpusched "$OUT/bin/gpusched" build --release -p gpusched-demo --bin gpusched
take_one example gpu_probe "$OUT/bin/gpu_probe" \
    build --release -p gpusched-vulkan --features fault-injection --example gpu_probe
take_one cdylib vk_fault_layer "$OUT/lib/libvk_fault_layer.so" build --release -p vk-fault-layer
for f in bin/bench-vulkan bin/gpusched bin/gpu_probe lib/libvk_fault_layer.so; do
    [ -f "$OUT/$f" ] || { say "error: $f was not built (see $LOG)"; exit 1; }
done
[ -s "$OUT/tests/LIST" ] || { say "error: no test binary was built (see $LOG)"; exit 1; }

# The Vulkan loader, the validation layer and vulkaninfo, from Debian's packages (the same
# versions as this machine's, so the validation messages match a local run).
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
for pkg in libvulkan1 vulkan-validationlayers vulkan-tools; do
    if ! (cd "$debs" && apt-get download "$pkg" >>"$LOG" 2>&1); then
        cached=$(ls /var/cache/apt/archives/"${pkg}"_*.deb 2>/dev/null | tail -n 1 || true)
        [ -n "$cached" ] || { say "error: cannot download $pkg (see $LOG)"; exit 1; }
        cp "$cached" "$debs/"
    fi
done
for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$OUT/vulkan"
    basename "$deb" >>"$OUT/vulkan/PACKAGES"
done
# Only the loader, the layer (library and manifest) and vulkaninfo are needed.
rm -rf "$OUT/vulkan/usr/share/doc" "$OUT/vulkan/usr/share/man" "$OUT/vulkan/usr/bin/vkcube"*

cp scripts/gpu-check-run.sh "$OUT/run.sh"
cp scripts/gpu-report.py "$OUT/gpu-report.py"
chmod +x "$OUT/run.sh" "$OUT/gpu-report.py"
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$([ -z "$(git status --porcelain 2>/dev/null)" ] || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(rustc --version)"
    echo "vulkan packages: $(tr '\n' ' ' <"$OUT/vulkan/PACKAGES")"
} >"$OUT/MANIFEST"

bytes=$(du -sb "$OUT" | cut -f1)
say "bundle: $OUT, $((bytes / 1024 / 1024)) MiB ($bytes bytes), $(wc -l <"$OUT/tests/LIST") test binaries"
echo "size: $bytes bytes" >>"$OUT/MANIFEST"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
    say "error: the bundle is over $MAX_BYTES bytes"
    du -ab "$OUT" | sort -n | tail -n 8
    exit 1
fi
say "next: on the GPU machine, $OUT/run.sh RESULTS_DIR"
