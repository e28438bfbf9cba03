#version 450
// Partial sums: out[g] = sum of in[g * 256 .. min(n, (g + 1) * 256)], one workgroup of 256
// invocations per 256 inputs (a tree reduction in shared memory). Apply it again to the
// partials until one value is left. Bindings: 0 = in (read), 1 = out (write).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer In { float src[]; };
layout(std430, binding = 1) writeonly buffer Out { float dst[]; };
layout(push_constant) uniform Push { uint n; } pc;
shared float partial[256];
void main() {
    uint i = gl_GlobalInvocationID.x;
    uint l = gl_LocalInvocationID.x;
    partial[l] = i < pc.n ? src[i] : 0.0;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1u) {
        if (l < s) {
            partial[l] += partial[l + s];
        }
        barrier();
    }
    if (l == 0u) {
        dst[gl_WorkGroupID.x] = partial[0];
    }
}
