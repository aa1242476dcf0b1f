// Packed 4×i8 arithmetic through the WGSL language extension `packed_4x8_integer_dot_product`
// (native OpSDot on Vulkan, dot4add on DX12, Dawn's lowering in browsers).

fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
}

fn unpack4(a: u32) -> vec4<i32> {
    return unpack4xI8(a);
}
