#!/bin/sh
# Regenerates the committed SPIR-V of the built-in kernels and graphics shaders from their
# GLSL sources. Needs glslc (Debian/Ubuntu package `glslc`, or the Vulkan SDK). Targets
# Vulkan 1.2 (SPIR-V 1.5): vulkan1.3 would emit LocalSizeId, which needs the maintenance4
# feature. Compute kernels `NAME.comp` become `NAME.spv`; graphics stages `NAME.vert` and
# `NAME.frag` become `NAME.vert.spv` and `NAME.frag.spv`.
# The test `shaders_up_to_date` (vulkan-backend/tests/shaders.rs) fails when a committed .spv
# differs from what this script produces.
set -eu
cd "$(dirname "$0")"
for src in *.comp; do
    glslc --target-env=vulkan1.2 -O -o "${src%.comp}.spv" "$src"
done
for src in *.vert *.frag; do
    glslc --target-env=vulkan1.2 -O -o "$src.spv" "$src"
done
