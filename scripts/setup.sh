#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 (bookworm) machine that already has Rust.
#
# 1. System packages for the Vulkan backend (lavapipe driver + loader, validation layer,
#    vulkaninfo, the glslc shader compiler) and Xvfb (the window test and example run on a
#    virtual X server). Skipped when `vulkaninfo --summary` already lists a device, the
#    validation layer's manifest exists, and glslc and Xvfb are on PATH. Otherwise runs
#    `apt-get update` once and one non-interactive `apt-get install` (CI has no stdin), as root,
#    through `sudo` when not root, or prints the commands to run and exits non-zero.
#    `make` is added to the install when it is missing.
# 2. The rustfmt and clippy components (`rustup component add`) when missing, and cargo-nextest
#    (`cargo install cargo-nextest --locked`) when `cargo nextest` is missing.
#
# Safe to run any number of times; prints one line per decision.
set -euo pipefail

PACKAGES=(mesa-vulkan-drivers libvulkan1 vulkan-validationlayers vulkan-tools glslc xvfb)
VALIDATION_JSON=/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Whether vulkaninfo runs and lists at least one physical device.
# (Output captured first: `vulkaninfo | grep -q` could die of SIGPIPE and fail under pipefail.)
vulkan_device_listed() {
    command -v vulkaninfo >/dev/null 2>&1 || return 1
    local summary
    summary=$(vulkaninfo --summary 2>/dev/null || true)
    grep -q 'deviceName' <<<"$summary"
}

vulkan_ready() {
    vulkan_device_listed && [ -f "$VALIDATION_JSON" ] && command -v glslc >/dev/null 2>&1 &&
        command -v Xvfb >/dev/null 2>&1
}

# Prints how to elevate: nothing as root, "sudo" / "sudo -n" otherwise; fails when impossible.
elevation() {
    if [ "$(id -u)" -eq 0 ]; then
        return 0
    fi
    command -v sudo >/dev/null 2>&1 || return 1
    if [ -t 0 ]; then
        echo sudo # interactive: sudo may ask for a password
    elif sudo -n true 2>/dev/null; then
        echo "sudo -n" # no stdin (CI): only passwordless sudo can work
    else
        return 1
    fi
}

install_vulkan() {
    local manual
    manual="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found (not Debian?); install the equivalents of: ${PACKAGES[*]}"
    local elev
    if ! elev=$(elevation); then
        printf '[setup] error: installing system packages needs root, and sudo is missing or needs a password.\n' >&2
        printf '[setup] run as root, then run this script again:\n    %s\n' "$manual" >&2
        exit 1
    fi
    log "installing ${PACKAGES[*]}${elev:+ (via $elev)}"
    # $elev is empty or "sudo"/"sudo -n": word splitting is intended.
    # shellcheck disable=SC2086
    $elev apt-get update -q
    # shellcheck disable=SC2086
    $elev env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

command -v make >/dev/null 2>&1 || PACKAGES+=(make)
if vulkan_ready && command -v make >/dev/null 2>&1; then
    log "vulkan: a device is listed, the validation layer, glslc and Xvfb are present; skipping apt"
else
    install_vulkan
    vulkan_device_listed ||
        die "vulkaninfo --summary still lists no device after the install (see its output)"
    [ -f "$VALIDATION_JSON" ] || die "validation layer manifest missing: $VALIDATION_JSON"
fi
log "vulkan devices: $(vulkaninfo --summary 2>/dev/null | sed -n 's/^[[:space:]]*deviceName[[:space:]]*= //p' | paste -sd ';' -)"

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust first (https://rustup.rs)"
for pair in rustfmt:fmt clippy:clippy; do
    component=${pair%%:*} subcommand=${pair#*:}
    if ! cargo "$subcommand" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 ||
            die "cargo $subcommand is missing and rustup is not there to add $component"
        log "adding the $component component (rustup component add $component)"
        rustup component add "$component"
    fi
done
if cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest: $(cargo nextest --version 2>/dev/null | head -n 1)"
else
    log "installing cargo-nextest (cargo install cargo-nextest --locked)"
    cargo install cargo-nextest --locked
fi
log "done"
