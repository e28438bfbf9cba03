#!/usr/bin/env bash
# The run half of the GPU device check (made by `scripts/gpu-check.sh build OUTDIR`, which
# copies this file to OUTDIR/run.sh): `OUTDIR/run.sh RESULTS_DIR` on a machine with a GPU
# and its driver and nothing else. Writes into RESULTS_DIR:
#   RESULTS-gpu.md   the report: device and driver, every step's outcome, every bench number
#                    and ratio of this one run, the demo's summary;
#   logs/STEP.log    each step's full output; steps.tsv its status and time;
#   demo-trace.json, demo-summary.json   the demo's Chrome trace and summary.
#
# Environment: the bundled loader, validation layer and fault layer are used
# (LD_LIBRARY_PATH, VK_LAYER_PATH); the driver is the machine's own: VK_ICD_FILENAMES and
# VK_DRIVER_FILES are unset so that the loader finds the installed ICDs (the NVIDIA one lives
# in /usr/share/vulkan/icd.d or /etc/vulkan/icd.d; when a container has the NVIDIA library but
# no manifest, one is written and added with VK_ADD_DRIVER_FILES).
#   GPU_CHECK_ALLOW_CPU=1   accept a CPU device (a dry run on lavapipe): the caller's
#                           VK_ICD_FILENAMES/VK_DRIVER_FILES are kept, lavapipe is pinned when
#                           neither is set. Without it the run stops when the device picked is
#                           a CPU one.
#   GPU_CHECK_BUDGET_S      the whole run's time budget in seconds (default 480); each step
#                           also has its own timeout.
#   GPUSCHED_DEVICE         passed through (pick a device by index or name).
set -uo pipefail

B=$(cd "$(dirname "$0")" && pwd)
R=${1:?usage: run.sh RESULTS_DIR}
mkdir -p "$R/logs"
R=$(cd "$R" && pwd)
BUDGET=${GPU_CHECK_BUDGET_S:-480}
START=$(date +%s)
STEPS=$R/steps.tsv
printf 'step\trc\tseconds\n' >"$STEPS"
say() { echo "[gpu-check run] $*"; }

# Bundled libraries first: our loader (libvulkan.so.1) and the validation layer's library
# (its manifest names it by file name only). The bundled layer manifests are added with
# VK_ADD_LAYER_PATH, searched before the system's: VK_LAYER_PATH would make the loader ignore
# VK_ADD_LAYER_PATH, through which the fault layer's tests add theirs.
export B VKLIB=$B/vulkan/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$VKLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export VK_ADD_LAYER_PATH=$B/vulkan/usr/share/vulkan/explicit_layer.d${VK_ADD_LAYER_PATH:+:$VK_ADD_LAYER_PATH}
unset VK_LAYER_PATH
export GPUSCHED_FAULT_LAYER_LIB=$B/lib/libvk_fault_layer.so
export RUST_BACKTRACE=1
# A test that cannot find the fault layer or a Vulkan driver fails instead of printing SKIPPED.
export CI=${CI:-1}
export CRITERION_HOME=${TMPDIR:-/tmp}/gpu-check-criterion.$$

if [ "${GPU_CHECK_ALLOW_CPU:-}" = 1 ]; then
    if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
        lvp=/usr/share/vulkan/icd.d/lvp_icd.$(uname -m).json
        [ -f "$lvp" ] && export VK_ICD_FILENAMES=$lvp
    fi
else
    unset VK_ICD_FILENAMES VK_DRIVER_FILES
fi

# `step NAME TIMEOUT_S CMD...`: runs CMD with its output in logs/NAME.log, under the smaller
# of its timeout and what is left of the budget (10 s kept for the report); records its exit
# status (124: timed out; "skip": no time left) and duration in steps.tsv.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START) - 10))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        printf '%s\tskip\t0\n' "$name" >>"$STEPS"
        say "$name: skipped (budget spent)"
        return 1
    fi
    local t0 rc
    t0=$(date +%s)
    say "$name (timeout ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$R/logs/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STEPS"
    [ "$rc" = 0 ] || say "$name: exit status $rc (see logs/$name.log)"
    return "$rc"
}

# The machine, the driver and the ICD manifests the loader will find.
env_report() {
    echo "host: $(uname -srm)"
    cat "$B/MANIFEST" 2>/dev/null
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
            | sed 's/^/nvidia-smi: /'
    else
        echo "nvidia-smi: not found"
    fi
    echo "VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-} VK_DRIVER_FILES=${VK_DRIVER_FILES:-}" \
        "VK_ADD_DRIVER_FILES=${VK_ADD_DRIVER_FILES:-} GPUSCHED_DEVICE=${GPUSCHED_DEVICE:-}"
    local found=0
    for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d \
        /usr/local/etc/vulkan/icd.d; do
        for f in "$d"/*.json; do
            [ -f "$f" ] || continue
            found=1
            echo "icd: $f -> $(grep -o '"library_path"[^,}]*' "$f" | head -n 1)"
        done
    done
    [ "$found" = 1 ] || echo "icd: none found in the standard directories"
    echo "missing libraries of the bundle (ldd):"
    ldd "$B/bin/gpu_probe" "$VKLIB/libVkLayer_khronos_validation.so" 2>&1 | grep 'not found' \
        || echo "  none"
}

# A container with the NVIDIA driver library but no Vulkan manifest (NVIDIA's container
# runtime adds the manifest only with the "graphics" capability): write one and add it.
nvidia_manifest() {
    grep -qs nvidia /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json && return 0
    local lib
    lib=$(ldconfig -p 2>/dev/null | grep -o '/[^ ]*libGLX_nvidia\.so\.0$' | head -n 1)
    [ -n "$lib" ] || return 0
    mkdir -p "$R/icd"
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' \
        "$lib" >"$R/icd/nvidia_icd.json"
    export VK_ADD_DRIVER_FILES=$R/icd/nvidia_icd.json
    say "no NVIDIA Vulkan manifest installed: using $R/icd/nvidia_icd.json ($lib)"
}

[ "${GPU_CHECK_ALLOW_CPU:-}" = 1 ] || nvidia_manifest
export -f env_report
step env 20 bash -c env_report
if [ -x "$B/vulkan/usr/bin/vulkaninfo" ]; then
    step vulkaninfo 20 "$B/vulkan/usr/bin/vulkaninfo" --summary
fi
if step probe 60 "$B/bin/gpu_probe"; then
    # The Vulkan suite, validation on (every test's default); each binary on its own.
    while read -r t; do
        case "$t" in
            vulkan-*) step "test-$t" 90 "$B/tests/$t" --test-threads=4 ;;
        esac
    done <"$B/tests/LIST"
    # The fault suites: the recovery tests above (vulkan-recovery), the seeded scenarios and
    # the fault layer.
    while read -r t; do
        case "$t" in
            faults-* | layer-*) step "test-$t" 120 "$B/tests/$t" --test-threads=2 ;;
        esac
    done <"$B/tests/LIST"
    # The benches against native queues (empty job, bursts and SAXPY, each with batching off
    # and on; cross-ring chains; device loss).
    step bench-vulkan 200 "$B/bin/bench-vulkan" --bench --warm-up-time 1 \
        --measurement-time 1 --sample-size 20 --noplot
    # The demo on the device, with its trace.
    step demo 90 "$B/bin/gpusched" demo --validation --no-progress \
        --trace "$R/demo-trace.json" --summary-json "$R/demo-summary.json"
else
    say "no usable device: the tests, benches and demo were not run (see logs/probe.log)"
fi
rm -rf "$CRITERION_HOME"

if command -v python3 >/dev/null; then
    python3 "$B/gpu-report.py" "$R" || say "the report formatter failed"
else
    {
        echo "# GPU check (python3 missing: raw numbers)"
        cat "$STEPS"
        grep -h '^metric: ' "$R"/logs/*.log
    } >"$R/RESULTS-gpu.md"
fi
say "done in $(($(date +%s) - START)) s: $R/RESULTS-gpu.md"
awk -F'\t' 'NR > 1 && $2 != 0 { bad = 1 } END { exit bad }' "$STEPS"
