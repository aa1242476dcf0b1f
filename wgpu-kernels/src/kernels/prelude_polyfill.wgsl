// Packed 4×i8 arithmetic for implementations without `packed_4x8_integer_dot_product`:
// sign-extend each byte with shifts, then an ordinary integer dot product. Same results, bit
// for bit: every product and partial sum is an exact i32.

fn unpack4(a: u32) -> vec4<i32> {
    return vec4<i32>(
        bitcast<i32>(a << 24u) >> 24u,
        bitcast<i32>(a << 16u) >> 24u,
        bitcast<i32>(a << 8u) >> 24u,
        bitcast<i32>(a) >> 24u,
    );
}

fn dot4(a: u32, b: u32) -> i32 {
    return dot(unpack4(a), unpack4(b));
}
