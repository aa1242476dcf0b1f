// Float32 depthwise 3×3 convolution (one filter per channel, dilation 1, stride STRIDE of 1 or
// 2), channels a multiple of four: NHWC activations read and written as vec4 words of four
// channels. Each invocation computes a tile of 2 × 4 output pixels (2 rows of a strip of 4
// horizontally adjacent pixels) × four channels. The channel word is the workgroup's x index,
// so every lane needs the same nine weight words, read once before the loop (by lanes 0–7 and
// shared by subgroup broadcasts where the device has subgroups, see conv_dw_f32_taps*.wgsl),
// and consecutive workgroups take the channel words of the same 64 tiles, so the cache lines
// of their input rows (a pixel's words side by side) stay in the CPU's cache between them.
// (With the channel word as the slow index, each word's pass over the image fetched every
// line again for a quarter of it or less: the stride-1 layers ~1.3× slower on lavapipe.)
// On CPU rasterisers a load is a loop over the lanes, so the tile is shaped for few input
// reads per multiply-add: each input word of a row is read once and serves every output of
// the tile that covers it (6 reads per input row at stride 1, 9 at stride 2; 4 rows, or 5,
// for 72 multiply-adds per channel).
//
// Why 2 × 4 and not wider: tiles of 2 × 8 were 1.1× faster on lavapipe's depthwise layers,
// but strips of 8 pixels (already one row of them) make SwiftShader's Subzero compiler, which
// runs WebGPU in browsers without a GPU, grow past 17 GB and never finish the pipeline (it
// lost the page's device); 2 × 4 compiles in seconds. tests/tests/software_webgpu.rs checks
// every kernel natively on Chromium's SwiftShader.
//
// Each output sums its nine taps in row-major order from zero, then adds the bias: the order
// of the CPU backend's direct loops (out-of-image taps add a zero product); a tap row that
// does not apply to an output row leaves it unchanged.

override PRELU: bool = false;
// A fused ReLU: max(v, 0) with NaN to 0, as the CPU backend's f32::max.
override RELU: bool = false;
override STRIDE: u32 = 1u;
const TILE_P: u32 = 4u; // output pixels per row of the tile
const ROWS: u32 = 2u; // output rows of the tile

struct Params {
    in_h: u32,
    in_w: u32,
    words: u32, // channels / 4
    strips: u32, // strips of TILE_P output pixels per output row
    out_h: u32,
    out_w: u32,
    pad_top: u32,
    pad_left: u32,
    shared_slope: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>; // [channel word][tap]
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>;

struct Run {
    images: u32,
}
@group(0) @binding(6) var<uniform> run: Run;

// The input word at column `ix` of the row starting at word `row`, zero outside the image.
fn col(row: u32, row_inside: bool, ix: i32) -> vec4<f32> {
    let inside = row_inside && ix >= 0 && ix < i32(p.in_w);
    return select(vec4<f32>(), x[select(0u, row + u32(ix) * p.words, inside)], inside);
}

// The nine weight words of a channel word, row-major (`taps`: conv_dw_f32_taps.wgsl, or its
// subgroup form).
struct Taps {
    t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>,
    t3: vec4<f32>, t4: vec4<f32>, t5: vec4<f32>,
    t6: vec4<f32>, t7: vec4<f32>, t8: vec4<f32>,
}

@compute @workgroup_size(64)
fn main(inp: Inputs) {
    let gid = inp.gid;
    let wid = inp.wid;
    // The channel word, uniform per workgroup; the grid has exactly one per word along x, so
    // no lane returns before the reads (see input_row).
    let cw = wid.x;
    let tile_index = wid.y * 64u + inp.li;
    let n = gid.z;
    let row_groups = (p.out_h + ROWS - 1u) / ROWS;
    // Lanes past the last tile compute on the last one and skip their stores.
    let tile = min(tile_index, row_groups * p.strips - 1u);
    let oy0 = (tile / p.strips) * ROWS;
    let ox0 = (tile % p.strips) * TILE_P;
    let top = i32(oy0 * STRIDE) - i32(p.pad_top);
    let left = i32(ox0 * STRIDE) - i32(p.pad_left);
    let t = taps(cw, inp);
    var a0_0 = vec4<f32>(); var a0_1 = vec4<f32>(); var a0_2 = vec4<f32>(); var a0_3 = vec4<f32>();
    var a1_0 = vec4<f32>(); var a1_1 = vec4<f32>(); var a1_2 = vec4<f32>(); var a1_3 = vec4<f32>();
    // The input rows, written out rather than looped over: on llvmpipe a read inside a loop or
    // after a branch that may have ended some lanes tests every lane's execution mask, a read
    // in straight-line code does not (stride-1 depthwise layers 1.1–1.2× faster so).
    input_row(0u, n, top, left, cw, t, &a0_0, &a0_1, &a0_2, &a0_3, &a1_0, &a1_1, &a1_2, &a1_3);
    input_row(1u, n, top, left, cw, t, &a0_0, &a0_1, &a0_2, &a0_3, &a1_0, &a1_1, &a1_2, &a1_3);
    input_row(2u, n, top, left, cw, t, &a0_0, &a0_1, &a0_2, &a0_3, &a1_0, &a1_1, &a1_2, &a1_3);
    input_row(3u, n, top, left, cw, t, &a0_0, &a0_1, &a0_2, &a0_3, &a1_0, &a1_1, &a1_2, &a1_3);
    if STRIDE == 2u {
        input_row(4u, n, top, left, cw, t, &a0_0, &a0_1, &a0_2, &a0_3, &a1_0, &a1_1, &a1_2, &a1_3);
    }
    if tile_index >= row_groups * p.strips {
        return;
    }
    let b = bias[cw];
    var s = vec4<f32>();
    if PRELU {
        s = vec4<f32>(slope[0]);
        if p.shared_slope == 0u {
            s = vec4<f32>(slope[cw * 4u], slope[cw * 4u + 1u], slope[cw * 4u + 2u], slope[cw * 4u + 3u]);
        }
    }
    // The accumulators are stored as values: on llvmpipe an array indexed at run time lives in
    // memory, written lane by lane (see store_block in conv_f32_block_common.wgsl).
    put(a0_0, n, oy0, ox0, cw, b, s);
    put(a0_1, n, oy0, ox0 + 1u, cw, b, s);
    put(a0_2, n, oy0, ox0 + 2u, cw, b, s);
    put(a0_3, n, oy0, ox0 + 3u, cw, b, s);
    put(a1_0, n, oy0 + 1u, ox0, cw, b, s);
    put(a1_1, n, oy0 + 1u, ox0 + 1u, cw, b, s);
    put(a1_2, n, oy0 + 1u, ox0 + 2u, cw, b, s);
    put(a1_3, n, oy0 + 1u, ox0 + 3u, cw, b, s);
}

// One output pixel's word: bias, then PReLU or ReLU; skipped past the image.
fn put(a: vec4<f32>, n: u32, oy: u32, ox: u32, cw: u32, b: vec4<f32>, s: vec4<f32>) {
    if oy < p.out_h && ox < p.out_w {
        var v = a + b;
        if PRELU {
            v = select(v * s, v, v > vec4<f32>());
        }
        if RELU {
            v = select(vec4<f32>(), v, v > vec4<f32>());
        }
        y[((n * p.out_h + oy) * p.out_w + ox) * p.words + cw] = v;
    }
}

// Input row `i` of the tile (of (ROWS − 1) · STRIDE + 3) into the accumulators of the output rows
// that take it as one of their kernel rows.
fn input_row(
    i: u32, n: u32, top: i32, left: i32, cw: u32, t: Taps,
    a0_0: ptr<function, vec4<f32>>, a0_1: ptr<function, vec4<f32>>,
    a0_2: ptr<function, vec4<f32>>, a0_3: ptr<function, vec4<f32>>,
    a1_0: ptr<function, vec4<f32>>, a1_1: ptr<function, vec4<f32>>,
    a1_2: ptr<function, vec4<f32>>, a1_3: ptr<function, vec4<f32>>,
) {
    let image = n * p.in_h * p.in_w;
    let t0 = t.t0;
    let t1 = t.t1;
    let t2 = t.t2;
    let t3 = t.t3;
    let t4 = t.t4;
    let t5 = t.t5;
    let t6 = t.t6;
    let t7 = t.t7;
    let t8 = t.t8;
    let iy = top + i32(i);
    let row_inside = iy >= 0 && iy < i32(p.in_h);
    let row = select(0u, (image + u32(iy) * p.in_w) * p.words + cw, row_inside);
    let c0 = col(row, row_inside, left + 0);
    let c1 = col(row, row_inside, left + 1);
    let c2 = col(row, row_inside, left + 2);
    let c3 = col(row, row_inside, left + 3);
    let c4 = col(row, row_inside, left + 4);
    let c5 = col(row, row_inside, left + 5);
    // Pixels 6–8 of the row, read at stride 2 only.
    var c6 = vec4<f32>(); var c7 = vec4<f32>(); var c8 = vec4<f32>();
    if STRIDE == 2u {
        c6 = col(row, row_inside, left + 6);
        c7 = col(row, row_inside, left + 7);
        c8 = col(row, row_inside, left + 8);
    }
    {
        // Output row 0 takes this input row as its kernel row ky.
        let ky = i32(i) - i32(0u * STRIDE);
        let on = ky >= 0 && ky < 3;
        let k0 = select(select(t6, t3, ky == 1), t0, ky <= 0);
        let k1 = select(select(t7, t4, ky == 1), t1, ky <= 0);
        let k2 = select(select(t8, t5, ky == 1), t2, ky <= 0);
        if STRIDE == 1u {
            (*a0_0) = select((*a0_0), (*a0_0) + c0 * k0 + c1 * k1 + c2 * k2, on);
            (*a0_1) = select((*a0_1), (*a0_1) + c1 * k0 + c2 * k1 + c3 * k2, on);
            (*a0_2) = select((*a0_2), (*a0_2) + c2 * k0 + c3 * k1 + c4 * k2, on);
            (*a0_3) = select((*a0_3), (*a0_3) + c3 * k0 + c4 * k1 + c5 * k2, on);
        } else {
            (*a0_0) = select((*a0_0), (*a0_0) + c0 * k0 + c1 * k1 + c2 * k2, on);
            (*a0_1) = select((*a0_1), (*a0_1) + c2 * k0 + c3 * k1 + c4 * k2, on);
            (*a0_2) = select((*a0_2), (*a0_2) + c4 * k0 + c5 * k1 + c6 * k2, on);
            (*a0_3) = select((*a0_3), (*a0_3) + c6 * k0 + c7 * k1 + c8 * k2, on);
        }
    }
    {
        // Output row 1 takes this input row as its kernel row ky.
        let ky = i32(i) - i32(1u * STRIDE);
        let on = ky >= 0 && ky < 3;
        let k0 = select(select(t6, t3, ky == 1), t0, ky <= 0);
        let k1 = select(select(t7, t4, ky == 1), t1, ky <= 0);
        let k2 = select(select(t8, t5, ky == 1), t2, ky <= 0);
        if STRIDE == 1u {
            (*a1_0) = select((*a1_0), (*a1_0) + c0 * k0 + c1 * k1 + c2 * k2, on);
            (*a1_1) = select((*a1_1), (*a1_1) + c1 * k0 + c2 * k1 + c3 * k2, on);
            (*a1_2) = select((*a1_2), (*a1_2) + c2 * k0 + c3 * k1 + c4 * k2, on);
            (*a1_3) = select((*a1_3), (*a1_3) + c3 * k0 + c4 * k1 + c5 * k2, on);
        } else {
            (*a1_0) = select((*a1_0), (*a1_0) + c0 * k0 + c1 * k1 + c2 * k2, on);
            (*a1_1) = select((*a1_1), (*a1_1) + c2 * k0 + c3 * k1 + c4 * k2, on);
            (*a1_2) = select((*a1_2), (*a1_2) + c4 * k0 + c5 * k1 + c6 * k2, on);
            (*a1_3) = select((*a1_3), (*a1_3) + c6 * k0 + c7 * k1 + c8 * k2, on);
        }
    }
}
