//! The float convolution of unquantized models: a channel × pixel register tiling. Four forms:
//! a depthwise 3×3 over channels in words of four, tiles of 2 × 4 pixels (`conv_dw_f32.wgsl`); one group with output
//! channels in fours, in blocks of 16 pixels × 8 or 16 channels or 8 × 32, weights in HWIO
//! (`conv_f32_block.wgsl` reading input channels in fours: SCRFD's full 1×1 and 3×3 layers;
//! `conv_f32_block_narrow.wgsl` one at a time otherwise: its first layer, on RGB); the tiled convolution reading the
//! input in words of four channels when each group's channels come in fours
//! (`conv_f32_vec4.wgsl`); and the general one (`conv_f32.wgsl`), where a float Gemm runs too,
//! its images as the pixel axis. All but the block take weights in OHWI with the channel tile
//! uniform per workgroup.

use efq_shared::graph::Tensor;

use super::conv::{ConvLayer, channel_tile};
use crate::error::EngineError;
use crate::kernels::{ConvParams, DepthwiseF32Params, Kernel, PipelineKey, grid_flat};
use crate::model::plan::{BatchAxis, Planner, Res};
use crate::weights::{float_hwio, float_ohwi};

impl Planner<'_> {
    /// A layer with float weights and input; returns the output buffer.
    pub(super) fn conv_f32(
        &mut self,
        layer: &ConvLayer,
        w: &Tensor,
        bias: &[f32],
    ) -> Result<usize, EngineError> {
        let g = &layer.geometry;
        let depthwise_3x3 = layer.in_per_group == 1
            && layer.out_per_group == 1
            && layer.out_c.is_multiple_of(4)
            && !layer.images_as_pixels
            && (g.k_h, g.k_w, g.dil_y, g.dil_x) == (3, 3, 1, 1)
            && g.stride_y == g.stride_x
            && matches!(g.stride_y, 1 | 2);
        if depthwise_3x3 {
            return self.conv_dw_f32(layer, w, bias);
        }
        // One group with output channels in fours: the pixel × channel block.
        let block = layer.groups == 1 && layer.out_c.is_multiple_of(4) && !layer.images_as_pixels;
        if block {
            return self.conv_f32_block(layer, w, bias);
        }
        let name = layer.name;
        let wf = self.param(&format!("{name}: weights"), &float_ohwi(w))?;
        let bias = self.param(&format!("{name}: bias"), bias)?;
        let out = self.alloc(layer.out_c * layer.out_pixels());
        let tile_o = channel_tile(layer.out_per_group);
        // Words of four channels never straddle a group when a group's channels come in fours.
        let vec4 = layer.in_per_group.is_multiple_of(4) && !layer.images_as_pixels;
        let u = self.uniform(&ConvParams {
            c: layer.x.c as u32,
            group: layer.in_per_group as u32,
            ..layer.geometry
        });
        let grid = self.check_grid(
            name,
            [
                layer.out_pixels().div_ceil(4).div_ceil(64) as u32,
                layer.out_c.div_ceil(tile_o) as u32,
            ],
        )?;
        let key = if vec4 {
            PipelineKey {
                kernel: Kernel::ConvF32Vec4,
                constants: vec![("TILE_O", tile_o as u32), layer.prelu, layer.relu],
            }
        } else {
            PipelineKey {
                kernel: Kernel::ConvF32,
                constants: vec![
                    ("TILE_O", tile_o as u32),
                    layer.prelu,
                    layer.relu,
                    ("IMAGES_AS_PIXELS", layer.images_as_pixels as u32),
                ],
            }
        };
        self.push(key, float_conv_bindings(layer, u, wf, bias, out), grid);
        if layer.images_as_pixels {
            self.steps.last_mut().expect("pushed").batch = BatchAxis::X { tile: 4 };
        }
        Ok(out)
    }

    /// A layer of one group with output channels in fours: blocks of 16 output pixels
    /// × 8 or 16 output channels, or 8 × 32, weights in HWIO (a tap's input channel's output
    /// channels side by side).
    fn conv_f32_block(
        &mut self,
        layer: &ConvLayer,
        w: &Tensor,
        bias: &[f32],
    ) -> Result<usize, EngineError> {
        let (name, g) = (layer.name, &layer.geometry);
        let (o, ci) = (layer.out_c, layer.x.c);
        let wf = self.param(&format!("{name}: weights"), &float_hwio(w))?;
        let bias = self.param(&format!("{name}: bias"), bias)?;
        let out = self.alloc(o * layer.out_pixels());
        // Input channels not in fours (SCRFD's RGB input) are read one at a time, by a kernel
        // without the 32-channel block.
        let subgroups = self.gpu.subgroups();
        let tile_o = block_channel_tile(o, if ci.is_multiple_of(4) { 32 } else { 16 }, subgroups);
        let pointwise = (g.k_h, g.k_w, g.stride_y, g.stride_x) == (1, 1, 1, 1)
            && (g.pad_top, g.pad_left) == (0, 0)
            && layer.out_hw == (layer.x.h, layer.x.w);
        // The narrow kernel reads the network's input as uploaded (NCHW) where it is its only
        // reader (see Planner::planar_input).
        let planar = !ci.is_multiple_of(4) && self.planar_input == Some(layer.x.buf);
        self.input_read_planar |= planar;
        let u = self.uniform(&ConvParams {
            c: ci as u32,
            group: ci as u32,
            planar: planar as u32,
            ..layer.geometry
        });
        // 16 pixels per block, or 8 for 32 channels (the same 64 accumulators).
        let tile_p = if tile_o == 32 { 8 } else { 16 };
        // A workgroup per `lanes` pixel blocks and channel block, channel blocks fastest (see
        // block_at in conv_f32_block_common.wgsl), folded into two dimensions as needed.
        let pixel_blocks = layer.out_pixels().div_ceil(tile_p);
        let lanes = block_lanes(pixel_blocks);
        let workgroups = pixel_blocks.div_ceil(lanes) * o.div_ceil(tile_o);
        let grid = self.check_grid(name, grid_flat(workgroups as u64, 1, self.max_dim))?;
        // The narrow kernel reads input channels one at a time.
        let key = if ci.is_multiple_of(4) {
            PipelineKey {
                kernel: if subgroups {
                    Kernel::ConvF32BlockSubgroup
                } else {
                    Kernel::ConvF32Block
                },
                constants: vec![
                    ("TILE_O", tile_o as u32),
                    layer.prelu,
                    layer.relu,
                    ("POINTWISE", pointwise as u32),
                    ("TILE_P", tile_p as u32),
                    ("LANES", lanes as u32),
                ],
            }
        } else {
            PipelineKey {
                kernel: if subgroups {
                    Kernel::ConvF32BlockNarrowSubgroup
                } else {
                    Kernel::ConvF32BlockNarrow
                },
                constants: vec![
                    ("TILE_O", tile_o as u32),
                    layer.prelu,
                    layer.relu,
                    ("LANES", lanes as u32),
                ],
            }
        };
        self.push(key, float_conv_bindings(layer, u, wf, bias, out), grid);
        Ok(out)
    }

    /// The depthwise 3×3 layer: `DEPTHWISE_ROWS` × `DEPTHWISE_STRIP` output pixels × four
    /// channels per invocation.
    fn conv_dw_f32(
        &mut self,
        layer: &ConvLayer,
        w: &Tensor,
        bias: &[f32],
    ) -> Result<usize, EngineError> {
        let (name, g) = (layer.name, &layer.geometry);
        let (oh, ow) = layer.out_hw;
        let words = layer.out_c / 4;
        // [channel word][tap][channel in the word]: the word's nine taps as vec4s.
        let mut wd = vec![0f32; w.data.len()];
        for c in 0..layer.out_c {
            for tap in 0..9 {
                wd[((c / 4) * 9 + tap) * 4 + c % 4] = w.data[c * 9 + tap];
            }
        }
        let wf = self.param(&format!("{name}: weights"), &wd)?;
        let bias = self.param(&format!("{name}: bias"), bias)?;
        let out = self.alloc(layer.out_c * layer.out_pixels());
        let strips = ow.div_ceil(DEPTHWISE_STRIP);
        let u = self.uniform(&DepthwiseF32Params {
            in_h: layer.x.h as u32,
            in_w: layer.x.w as u32,
            words: words as u32,
            strips: strips as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            shared_slope: layer.shared_slope,
            _pad: [0; 3],
        });
        let tiles = oh.div_ceil(DEPTHWISE_ROWS) * strips;
        let grid = self.check_grid(name, [words as u32, tiles.div_ceil(64) as u32])?;
        self.push(
            PipelineKey {
                kernel: if self.gpu.subgroups() {
                    Kernel::ConvDepthwiseF32Subgroup
                } else {
                    Kernel::ConvDepthwiseF32
                },
                constants: vec![layer.prelu, layer.relu, ("STRIDE", g.stride_y)],
            },
            vec![
                u,
                wf,
                Res::Pool(layer.x.buf),
                bias,
                layer.slopes,
                Res::Pool(out),
                Res::Run,
            ],
            grid,
        );
        Ok(out)
    }
}

/// Output pixels per row and rows per invocation of the depthwise kernel (`TILE_P` and `ROWS`
/// in conv_dw_f32.wgsl).
const DEPTHWISE_STRIP: usize = 4;
const DEPTHWISE_ROWS: usize = 2;

/// Output channels per invocation of the 16-pixel block (8 or 16) or the 8-pixel one (32).
///
/// Where the weights are read by each invocation (no subgroups: browsers), the most of 32, 16
/// and 8 that pads the channels by at most a quarter over 8 (the excess channels of the last
/// block are computed on clamped weights and not stored): 8 → 8, 20 → 24 (8), 40 → 48 (16),
/// 72 → 80 (16), 152 → 160 (32), 288 → 288 (32).
///
/// Where subgroups share them, the tile of least estimated cost on lavapipe, whose storage
/// reads are loops over the lanes: the multiply-adds of the padded channels, plus 40 per read
/// per pixel and input channel (the input once per channel block, the shared weights
/// t / (8 · pixels) words). 40 fits chains of ten 1×1 layers (the `conv_chain` example; docs/
/// EXPERIMENTS.md): 40 → 40 as fast with 16 as with 32, 72 → 72 1.1× and 20 → 20 1.2× faster
/// with 32 than with 16. So 8 → 8, 16 → 16, 20 → 32, 40 → 16, 64 → 32, 72 → 32, 152 → 32,
/// 288 → 32.
/// `max` caps both (the narrow kernel has no 32).
fn block_channel_tile(out_c: usize, max: usize, shared_weights: bool) -> usize {
    if !shared_weights {
        let bound = out_c.next_multiple_of(8) * 5;
        return [32, 16]
            .into_iter()
            .find(|&t| t <= max && out_c.next_multiple_of(t) * 4 <= bound)
            .unwrap_or(8);
    }
    let cost = |t: usize| {
        let pixels = if t == 32 { 8 } else { 16 };
        let reads = out_c.div_ceil(t) as f64 * (1.0 + t as f64 / (8 * pixels) as f64);
        out_c.next_multiple_of(t) as f64 + 40.0 * reads
    };
    [32, 16, 8]
        .into_iter()
        .filter(|&t| t <= max)
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
        .expect("8 is never above max")
}

/// Invocations per workgroup of the block kernels for a layer of `pixel_blocks`: 64, unless
/// that pads the pixel blocks by more than an eighth (a padded lane computes a clamped block in
/// full and skips its stores), then the multiple of 8 from 32 to 56 that pads them least:
/// 50 blocks (a 20×20 layer in blocks of 8 pixels) → 56 rather than 64, 200 → 40 rather than
/// 256 in four workgroups. Multiples of 8 keep every subgroup of 8 lanes full where the weights
/// are shared; five sizes at most keep the pipelines few.
fn block_lanes(pixel_blocks: usize) -> usize {
    let padding = |lanes: usize| pixel_blocks.next_multiple_of(lanes) - pixel_blocks;
    if padding(64) * 8 <= pixel_blocks.next_multiple_of(64) {
        return 64;
    }
    [56, 48, 40, 32]
        .into_iter()
        .min_by_key(|&lanes| padding(lanes))
        .expect("four candidates")
}

/// The bindings every float convolution kernel but the depthwise one takes, in its order:
/// parameters, weights, input, bias, PReLU slopes, output, the run's batch.
fn float_conv_bindings(layer: &ConvLayer, u: Res, wf: Res, bias: Res, out: usize) -> Vec<Res> {
    vec![
        u,
        wf,
        Res::Pool(layer.x.buf),
        bias,
        layer.slopes,
        Res::Pool(out),
        Res::Run,
    ]
}

#[cfg(test)]
mod tests {
    use efq_shared::graph::{ConvAttrs, GraphBuilder, Op, Tensor, Weights};
    use efq_shared::reference;
    use rand::{Rng, SeedableRng};

    use crate::{GpuModel, GpuOptions, Images, request_blocking};

    #[test]
    fn block_channel_tiles_follow_the_read_count_where_weights_are_shared() {
        use super::block_channel_tile;
        let shared = [8, 16, 20, 40, 64, 72, 152, 288].map(|o| block_channel_tile(o, 32, true));
        assert_eq!(shared, [8, 16, 32, 16, 32, 32, 32, 32]);
        let own = [8, 16, 20, 40, 64, 72, 152, 288].map(|o| block_channel_tile(o, 32, false));
        assert_eq!(own, [8, 16, 8, 16, 32, 16, 32, 32]);
        // The narrow kernel has no 32.
        assert_eq!(block_channel_tile(72, 16, true), 16);
    }

    #[test]
    fn block_lanes_pad_small_layers_least() {
        use super::block_lanes;
        assert_eq!(block_lanes(6400), 64);
        assert_eq!(block_lanes(400), 64); // 448: 48 of 448 padded, under an eighth
        assert_eq!(block_lanes(200), 40);
        assert_eq!(block_lanes(50), 56);
        assert_eq!(block_lanes(25), 32);
        assert_eq!(block_lanes(1), 32);
    }

    /// The block kernel keeps the oracle's bits (on software rasterisers, which round each
    /// multiply and add; elsewhere within 1e-5 relative) wherever a workgroup's 64 pixel blocks
    /// run past the image and over several channel blocks, the 32-channel block included, with
    /// and without subgroup weight reads.
    #[test]
    fn block_conv_is_exact_over_partial_workgroups_and_several_channel_blocks() {
        let device = request_blocking(&GpuOptions::default()).expect("a GPU adapter");
        for gpu in [
            device.clone().with_subgroups(true),
            device.with_subgroups(false),
        ] {
            block_conv_matches_the_oracle(&gpu);
        }
    }

    fn block_conv_matches_the_oracle(gpu: &crate::Gpu) {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // 37 × 29 pixels: 68 pixel blocks of 16, so two workgroups per channel block, the
        // second with 4 live lanes, × 40 output channels (three channel blocks of 16); 33 × 17
        // × 64 channels: 71 blocks of 8 pixels × two 32-channel blocks; 3 × 7: one partial
        // pixel block.
        for (in_c, out_c, h, w) in [
            (8, 40, 37, 29),
            (16, 64, 33, 17),
            (12, 48, 9, 9),
            (4, 24, 3, 7),
        ] {
            let mut v =
                |n: usize| -> Vec<f32> { (0..n).map(|_| r.random_range(-1.0..1.0)).collect() };
            let weights = Tensor::new(vec![out_c, in_c, 1, 1], v(out_c * in_c)).expect("shape");
            let bias = v(out_c);
            let input = v(2 * in_c * h * w);
            let mut b = GraphBuilder::new("block", [in_c, h, w]);
            let attrs = ConvAttrs::default();
            let y = b.push(
                "conv",
                Op::Conv {
                    weights: Weights::Float(weights),
                    bias,
                    attrs,
                    input_quant: None,
                },
                &[GraphBuilder::INPUT],
            );
            let y = b.push("flatten", Op::Flatten, &[y]);
            let graph = b.finish(y).expect("valid graph");
            let model = GpuModel::from_graph(gpu, &graph, 2).expect("compiles");
            let got = model
                .forward_blocking(Images::Nchw(&input), 2)
                .expect("runs");
            let want = reference::forward(&graph, &input, 2).expect("the oracle runs");
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                if gpu.adapter().software {
                    assert_eq!(
                        g.to_bits(),
                        e.to_bits(),
                        "{in_c}→{out_c} {h}×{w}: element {i}"
                    );
                } else {
                    assert!(
                        (g - e).abs() <= 1e-5 * scale,
                        "{in_c}→{out_c} {h}×{w}: element {i}"
                    );
                }
            }
        }
    }

    /// The narrow kernel (input channels not in fours) reads the network's input as uploaded,
    /// NCHW, without the layout pass, where it is the input's only reader, and NHWC
    /// activations elsewhere (here after a ReLU): both within 1e-5 of the oracle.
    #[test]
    fn narrow_conv_reads_the_upload_in_place_when_its_only_reader_and_nhwc_elsewhere() {
        let gpu = request_blocking(&GpuOptions::default()).expect("a GPU adapter");
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (c, o, h, w) = (3, 8, 13, 10);
        let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| r.random_range(-1.0..1.0)).collect() };
        let weights = Tensor::new(vec![o, c, 3, 3], v(o * c * 9)).expect("shape");
        let bias = v(o);
        let input = v(2 * c * h * w);
        for after_relu in [false, true] {
            let mut b = GraphBuilder::new("narrow", [c, h, w]);
            let mut x = GraphBuilder::INPUT;
            if after_relu {
                x = b.push("relu", Op::Relu, &[x]);
            }
            let conv = Op::Conv {
                weights: Weights::Float(weights.clone()),
                bias: bias.clone(),
                attrs: ConvAttrs {
                    stride: [2, 2],
                    pads: [1; 4],
                    ..ConvAttrs::default()
                },
                input_quant: None,
            };
            let y = b.push("conv", conv, &[x]);
            let y = b.push("flatten", Op::Flatten, &[y]);
            let graph = b.finish(y).expect("valid graph");
            let model = GpuModel::from_graph(&gpu, &graph, 2).expect("compiles");
            let got = model
                .forward_blocking(Images::Nchw(&input), 2)
                .expect("runs");
            let want = reference::forward(&graph, &input, 2).expect("the oracle runs");
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * scale,
                    "after a ReLU: {after_relu}, element {i}: {g} vs {e}"
                );
            }
            let rows = model.profile(&input, 2).expect("profiles");
            let layout_pass = rows.iter().any(|row| row.kernel == "FromNchw");
            assert_eq!(layout_pass, after_relu, "the NCHW → NHWC pass");
        }
    }
}
