#version 450
// The built-in triangle (GraphicsBuiltin::Triangle): three vertices, no vertex buffer, in
// normalised device coordinates (Vulkan: y points down): apex (0, -0.5), base corners
// (-0.5, 0.5) and (0.5, 0.5). It covers the centre of the render area and none of its
// corners.

const vec2 POS[3] = vec2[3](vec2(0.0, -0.5), vec2(-0.5, 0.5), vec2(0.5, 0.5));

void main() {
    gl_Position = vec4(POS[gl_VertexIndex % 3], 0.0, 1.0);
}
