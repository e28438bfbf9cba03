#version 450
// fnv_step: one step of the fault suite's job value (`gpusched_tests::job_value`, 32-bit
// FNV-1a over words): acc[0] = (acc[0] ^ src[0]) * 16777619, then `| 1` on the last step.
// Bindings: 0 = src (read), 1 = acc (read-write). Push constant: last (u32, 0 or 1).
// One invocation. Rebuild: glslc --target-env=vulkan1.2 -O -o fnv_step.spv fnv_step.comp
layout(local_size_x = 1) in;
layout(std430, binding = 0) readonly buffer Src { uint src[]; };
layout(std430, binding = 1) buffer Acc { uint acc[]; };
layout(push_constant) uniform Push { uint last; } pc;
void main() {
    uint h = (acc[0] ^ src[0]) * 16777619u;
    if (pc.last != 0u) {
        h |= 1u;
    }
    acc[0] = h;
}
