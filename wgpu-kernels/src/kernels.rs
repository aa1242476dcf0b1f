//! The WGSL kernels: one `.wgsl` file each under `kernels/`, a prelude that provides `dot4` and
//! `unpack4` natively or as a polyfill, and the packed-weight reader for the integer
//! convolutions. Pipelines are compiled once per (kernel, override constants) and shared by
//! every model on a device.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Dot4, Gpu};

const PRELUDE_DOT4: &str = include_str!("kernels/prelude_dot4.wgsl");
const PRELUDE_POLYFILL: &str = include_str!("kernels/prelude_polyfill.wgsl");
const PACKED_WEIGHTS: &str = include_str!("kernels/packed_weights.wgsl");
const INT_EPILOGUE: &str = include_str!("kernels/int_epilogue.wgsl");
const QUANTIZE: &str = include_str!("kernels/quantize.wgsl");
const CONV_INT: &str = include_str!("kernels/conv_int.wgsl");
const GEMM_INT: &str = include_str!("kernels/gemm_int.wgsl");
const CONV_DW_INT: &str = include_str!("kernels/conv_dw_int.wgsl");
const CONV_F32: &str = include_str!("kernels/conv_f32.wgsl");
const ELEMENTWISE: &str = include_str!("kernels/elementwise.wgsl");
const LAYOUT: &str = include_str!("kernels/layout.wgsl");
const L2NORM: &str = include_str!("kernels/l2norm.wgsl");
const UPSAMPLE: &str = include_str!("kernels/upsample.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Quantize,
    ConvInt,
    GemmInt,
    ConvDepthwiseInt,
    ConvF32,
    Add,
    Prelu,
    Relu,
    Affine,
    FromRgb8,
    FromNchw,
    ToNchw,
    L2Norm,
    Upsample,
}

/// How a kernel sees one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
}

use Access::{Read, ReadWrite, Uniform};

impl Kernel {
    pub const ALL: [Kernel; 14] = [
        Kernel::Quantize,
        Kernel::ConvInt,
        Kernel::GemmInt,
        Kernel::ConvDepthwiseInt,
        Kernel::ConvF32,
        Kernel::Add,
        Kernel::Prelu,
        Kernel::Relu,
        Kernel::Affine,
        Kernel::FromRgb8,
        Kernel::FromNchw,
        Kernel::ToNchw,
        Kernel::L2Norm,
        Kernel::Upsample,
    ];

    fn file(self) -> &'static str {
        match self {
            Kernel::Quantize => QUANTIZE,
            Kernel::ConvInt => CONV_INT,
            Kernel::GemmInt => GEMM_INT,
            Kernel::ConvDepthwiseInt => CONV_DW_INT,
            Kernel::ConvF32 => CONV_F32,
            Kernel::Add | Kernel::Prelu | Kernel::Relu | Kernel::Affine => ELEMENTWISE,
            Kernel::FromRgb8 | Kernel::FromNchw | Kernel::ToNchw => LAYOUT,
            Kernel::L2Norm => L2NORM,
            Kernel::Upsample => UPSAMPLE,
        }
    }

    pub fn entry_point(self) -> &'static str {
        match self {
            Kernel::Add => "add",
            Kernel::Prelu => "prelu",
            Kernel::Relu => "relu",
            Kernel::Affine => "affine",
            Kernel::FromRgb8 => "from_rgb8",
            Kernel::FromNchw => "from_nchw",
            Kernel::ToNchw => "to_nchw",
            _ => "main",
        }
    }

    fn reads_packed_weights(self) -> bool {
        matches!(
            self,
            Kernel::ConvInt | Kernel::GemmInt | Kernel::ConvDepthwiseInt
        )
    }

    /// The bindings of group 0, in binding order.
    pub fn bindings(self) -> &'static [Access] {
        match self {
            Kernel::Quantize => &[Uniform, Read, ReadWrite],
            Kernel::ConvInt | Kernel::ConvDepthwiseInt => {
                &[Uniform, Read, Read, Read, Read, Read, ReadWrite]
            }
            Kernel::GemmInt => &[Uniform, Read, Read, Read, Read, Read, ReadWrite, Uniform],
            Kernel::ConvF32 => &[Uniform, Read, Read, Read, Read, ReadWrite, Uniform],
            Kernel::Add | Kernel::Prelu | Kernel::Relu | Kernel::Affine => {
                &[Uniform, Read, Read, Read, ReadWrite]
            }
            Kernel::FromRgb8
            | Kernel::FromNchw
            | Kernel::ToNchw
            | Kernel::L2Norm
            | Kernel::Upsample => &[Uniform, Read, ReadWrite],
        }
    }

    /// The complete WGSL module for this kernel.
    pub fn source(self, dot4: Dot4) -> String {
        let prelude = match dot4 {
            Dot4::Native => PRELUDE_DOT4,
            Dot4::Polyfill => PRELUDE_POLYFILL,
        };
        // The integer kernels share the packed-weight reader, their bindings and the epilogue.
        let (weights, epilogue) = if self.reads_packed_weights() {
            (PACKED_WEIGHTS, INT_EPILOGUE)
        } else {
            ("", "")
        };
        format!("{prelude}\n{weights}\n{epilogue}\n{}", self.file())
    }
}

/// A compiled pipeline is identified by its kernel and its override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub kernel: Kernel,
    pub constants: Vec<(&'static str, u32)>,
}

#[derive(Clone)]
pub struct Pipelines {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// The pipeline for `key`, compiled on first use.
pub fn pipeline(gpu: &Gpu, key: &PipelineKey) -> Pipelines {
    let mut cache = gpu.pipelines.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(key) {
        return p.clone();
    }
    let kernel = key.kernel;
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
        .bindings()
        .iter()
        .enumerate()
        .map(|(i, access)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match access {
                    Uniform => wgpu::BufferBindingType::Uniform,
                    Read => wgpu::BufferBindingType::Storage { read_only: true },
                    ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let label = format!("{kernel:?}");
    let layout = gpu
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
    let pipeline_layout = gpu
        .device
        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
    let module = gpu
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(kernel.source(gpu.dot4).into()),
        });
    let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(k, v)| (k, v as f64)).collect();
    let pipeline = gpu
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(kernel.entry_point()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
    let p = Pipelines { pipeline, layout };
    cache.insert(key.clone(), p.clone());
    p
}

// Uniform parameter blocks, field for field the `Params` structs of the WGSL files.

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QuantizeParams {
    pub pixels: u32,
    pub channels: u32,
    pub group_channels: u32,
    pub words_per_group: u32,
    pub words_per_pixel: u32,
    /// The integer grid `[lo, hi]` (`ActQuant::levels`).
    pub lo: f32,
    pub hi: f32,
    pub inv_scale: f32,
}

/// Shared by `conv_int.wgsl` (where `c` is words per input pixel and `group` words per group)
/// and `conv_f32.wgsl` (input channels and channels per group).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub in_h: u32,
    pub in_w: u32,
    pub c: u32,
    pub group: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub out_c: u32,
    pub out_per_group: u32,
    pub k_h: u32,
    pub k_w: u32,
    pub stride_y: u32,
    pub stride_x: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub dil_y: u32,
    pub dil_x: u32,
    pub shared_slope: u32,
    pub zero: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GemmParams {
    pub in_words: u32,
    pub out_c: u32,
    pub shared_slope: u32,
    pub zero: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct DepthwiseParams {
    pub in_h: u32,
    pub in_w: u32,
    pub channels: u32,
    pub words: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub k_h: u32,
    pub k_w: u32,
    pub stride_y: u32,
    pub stride_x: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub dil_y: u32,
    pub dil_x: u32,
    pub shared_slope: u32,
    pub zero: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub count: u32,
    pub channels: u32,
    pub shared_param: u32,
    pub zero: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayoutParams {
    pub pixels: u32,
    pub channels: u32,
    pub mean: f32,
    pub inv_std: f32,
    pub bgr: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct UpsampleParams {
    pub out_w: u32,
    pub out_h: u32,
    pub channels: u32,
    pub factor: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct L2NormParams {
    pub dim: u32,
    pub _pad: [u32; 3],
}

/// Workgroup grid for `count` elements at 256 per workgroup, folded into two dimensions when
/// one would exceed `max_dim` (the WGSL side recombines `gid.x + gid.y · nwg.x · 256`).
pub fn grid_1d(count: u64, max_dim: u32) -> [u32; 2] {
    let groups = count.div_ceil(256).max(1);
    if groups <= max_dim as u64 {
        [groups as u32, 1]
    } else {
        let y = groups.div_ceil(max_dim as u64);
        [groups.div_ceil(y) as u32, y as u32]
    }
}
