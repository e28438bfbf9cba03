# shellcheck shell=sh
# Environment for the Makefile targets (sourced by POSIX sh: `. scripts/env.sh`).
#
# Vulkan device pinning: tests, the demo and the benches run on Mesa lavapipe (the CPU driver)
# by default, so that results do not depend on which other Mesa ICDs (Intel, Radeon) happen to
# be installed. The pin applies only when no explicit device is requested, that is when none of
# these is set:
#   VK_ICD_FILENAMES / VK_DRIVER_FILES  the Vulkan loader's own driver selection;
#   GPUSCHED_DEVICE                     the gpusched device selector (reserved for the Vulkan
#                                       backend; set it to anything to keep a real GPU usable).
# The pin is skipped, with a note, when the lavapipe manifest is not installed.

if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -z "${VK_DRIVER_FILES:-}" ] && [ -z "${GPUSCHED_DEVICE:-}" ]; then
    _gpusched_lvp="/usr/share/vulkan/icd.d/lvp_icd.$(uname -m).json"
    if [ -f "$_gpusched_lvp" ]; then
        VK_ICD_FILENAMES="$_gpusched_lvp"
        export VK_ICD_FILENAMES
    else
        echo "[env] note: $_gpusched_lvp not found; Vulkan device not pinned (run scripts/setup.sh)" >&2
    fi
    unset _gpusched_lvp
fi
