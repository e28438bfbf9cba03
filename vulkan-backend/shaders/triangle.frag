#version 450
// The built-in triangle's colour: the push constant `colour` (RGBA, 16 bytes).

layout(push_constant) uniform Push {
    vec4 colour;
} pc;

layout(location = 0) out vec4 out_colour;

void main() {
    out_colour = pc.colour;
}
