// What the integer kernels (conv_int, conv_dw_int, gemm_int) share: their packed input, the
// float epilogue's per-channel parameters, the f32 output, and the epilogue of
// docs/quantization.md itself. Each kernel declares `p` (binding 0) with `shared_slope` and
// `zero` fields; binding 1 is the packed weights (packed_weights.wgsl).

override PRELU: bool = false;

@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read> mult: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> slope: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

// The reference rounds f32(acc)·m and then +bias separately. GPU compilers may contract the
// pair into one fused multiply-add (one rounding), which changes the last bit and, through the
// next layer's rounding to the integer grid, the whole network's output. XOR with a uniform
// zero is an identity the compiler cannot see through, so the product is rounded on its own.
fn no_contract(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

// Output channel o of an exact integer sum: f32(acc)·m[o] + bias[o], then PReLU if fused.
fn epilogue(acc: i32, o: u32) -> f32 {
    var v = no_contract(f32(acc) * mult[o]) + bias[o];
    if PRELU && !(v > 0.0) {
        v = v * slope[select(o, 0u, p.shared_slope != 0u)];
    }
    return v;
}
