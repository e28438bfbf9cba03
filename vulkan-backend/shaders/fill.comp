#version 450
// fill: data[i] = value for i < count. Bindings: 0 = data (write).
layout(local_size_x = 64) in;
layout(std430, binding = 0) writeonly buffer Data { float data[]; };
layout(push_constant) uniform Push { float value; uint count; } pc;
void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i < pc.count) {
        data[i] = pc.value;
    }
}
