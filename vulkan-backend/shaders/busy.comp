#version 450
// busy: burns `rounds * 256` xorshift steps (not an affine map, which LLVM would fold) per invocation; the job's length is set by the
// number of workgroups (lavapipe caps every loop at 65,535 iterations, so keep `rounds`
// small and scale with workgroups: see VULKAN-NOTES). Binding 0 = sink (written only when
// the hash happens to reach zero, so the work cannot be optimised away).
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer Sink { uint sink[]; };
layout(push_constant) uniform Push { uint rounds; } pc;
#define STEP x ^= x << 13u; x ^= x >> 17u; x ^= x << 5u;
#define STEP4 STEP STEP STEP STEP
#define STEP16 STEP4 STEP4 STEP4 STEP4
#define STEP256 STEP16 STEP16 STEP16 STEP16 STEP16 STEP16 STEP16 STEP16 \
    STEP16 STEP16 STEP16 STEP16 STEP16 STEP16 STEP16 STEP16
void main() {
    uint x = gl_GlobalInvocationID.x;
    for (uint r = 0u; r < pc.rounds; r++) {
        STEP256
    }
    if (x == 0u) {
        sink[0] = x + 1u;
    }
}
