// Quantized weights stay in GPU memory at their bit-width W_BITS (2–8): a dense, LSB-first
// stream of two's-complement fields, four consecutive input channels per 4·W_BITS-bit group
// (see `pack_conv_weights` in weights.rs). A group may straddle two u32 words when W_BITS is
// not a power of two; the stream carries one spare word so that reading `word + 1` is safe.

override W_BITS: u32 = 8u;

@group(0) @binding(1) var<storage, read> wq: array<u32>;

// The 4·W_BITS raw bits of group `idx`.
fn weight_bits(idx: u32) -> u32 {
    let bit = idx * 4u * W_BITS;
    let word = bit >> 5u;
    let off = bit & 31u;
    var raw = wq[word] >> off;
    if off + 4u * W_BITS > 32u {
        raw |= wq[word + 1u] << (32u - off);
    }
    return raw;
}

// Field b of a group, sign-extended.
fn weight_field(raw: u32, b: u32) -> i32 {
    return bitcast<i32>(raw << (32u - W_BITS * (b + 1u))) >> (32u - W_BITS);
}

// Group `idx` as four i8 in one word, the operand layout of dot4.
fn weight_i8x4(idx: u32) -> u32 {
    let raw = weight_bits(idx);
    if W_BITS == 8u {
        return raw;
    }
    var word = 0u;
    for (var b = 0u; b < 4u; b++) {
        word |= (bitcast<u32>(weight_field(raw, b)) & 0xffu) << (8u * b);
    }
    return word;
}

// Group `idx` as a vector of four i32.
fn weight_vec4(idx: u32) -> vec4<i32> {
    let raw = weight_bits(idx);
    return vec4<i32>(
        weight_field(raw, 0u),
        weight_field(raw, 1u),
        weight_field(raw, 2u),
        weight_field(raw, 3u),
    );
}
