//! The WGSL kernels: one `.wgsl` file each in this folder, a prelude that provides `dot4` and
//! `unpack4` natively or as a polyfill, and the packed-weight reader for the integer
//! convolutions. Pipelines are compiled once per (kernel, override constants) and shared by
//! every model on a device.
//!
//! Each kernel's shader has a Rust module of the same name beside it, holding its source and
//! its uniform parameter block (field for field the shader's `Params`), so that a change to
//! one is seen next to the other. The pieces pasted into several shaders (preludes, packed
//! weights, integer epilogue) are included here.

mod conv_dw_f32;
mod conv_dw_int;
mod conv_f32;
mod conv_f32_block;
mod conv_f32_block_narrow;
mod conv_f32_vec4;
mod conv_int;
mod elementwise;
mod gallery_scores;
mod gemm_int;
mod l2norm;
mod layout;
mod quantize;
mod upsample;

pub use conv_dw_f32::DepthwiseF32Params;
pub use conv_dw_int::DepthwiseParams;
pub use conv_int::ConvParams;
pub use elementwise::ElementwiseParams;
pub use gallery_scores::{GALLERY_MAX_PROBES, GALLERY_ROWS_PER_GROUP, GalleryScoresParams};
pub use gemm_int::GemmParams;
pub use l2norm::L2NormParams;
pub use layout::LayoutParams;
pub use quantize::QuantizeParams;
pub use upsample::UpsampleParams;

use crate::gpu::{Dot4, Gpu};

const PRELUDE_DOT4: &str = include_str!("prelude_dot4.wgsl");
const PRELUDE_POLYFILL: &str = include_str!("prelude_polyfill.wgsl");
const PACKED_WEIGHTS: &str = include_str!("packed_weights.wgsl");
const INT_EPILOGUE: &str = include_str!("int_epilogue.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Quantize,
    ConvInt,
    GemmInt,
    ConvDepthwiseInt,
    ConvF32,
    ConvF32Vec4,
    ConvF32Block,
    /// [`Kernel::ConvF32Block`] sharing its weight reads through subgroup broadcasts.
    ConvF32BlockSubgroup,
    ConvF32BlockNarrow,
    /// [`Kernel::ConvF32BlockNarrow`] sharing its weight reads through subgroup broadcasts.
    ConvF32BlockNarrowSubgroup,
    ConvDepthwiseF32,
    /// [`Kernel::ConvDepthwiseF32`] sharing its weight reads through subgroup broadcasts.
    ConvDepthwiseF32Subgroup,
    Add,
    Prelu,
    Relu,
    Affine,
    FromRgb8,
    FromNchw,
    ToNchw,
    L2Norm,
    Upsample,
    /// An Add of an upsampled operand, in one pass.
    UpsampleAdd,
    GalleryScores,
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
    /// Every kernel (the shader validation test walks them).
    #[cfg(test)]
    pub const ALL: [Kernel; 23] = [
        Kernel::Quantize,
        Kernel::ConvInt,
        Kernel::GemmInt,
        Kernel::ConvDepthwiseInt,
        Kernel::ConvF32,
        Kernel::ConvF32Vec4,
        Kernel::ConvF32Block,
        Kernel::ConvF32BlockSubgroup,
        Kernel::ConvF32BlockNarrow,
        Kernel::ConvF32BlockNarrowSubgroup,
        Kernel::ConvDepthwiseF32,
        Kernel::ConvDepthwiseF32Subgroup,
        Kernel::Add,
        Kernel::Prelu,
        Kernel::Relu,
        Kernel::Affine,
        Kernel::FromRgb8,
        Kernel::FromNchw,
        Kernel::ToNchw,
        Kernel::L2Norm,
        Kernel::Upsample,
        Kernel::UpsampleAdd,
        Kernel::GalleryScores,
    ];

    /// The kernel's name in profiles: `"ConvInt"` and so on.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Quantize => "Quantize",
            Kernel::ConvInt => "ConvInt",
            Kernel::GemmInt => "GemmInt",
            Kernel::ConvDepthwiseInt => "ConvDepthwiseInt",
            Kernel::ConvF32 => "ConvF32",
            Kernel::ConvF32Vec4 => "ConvF32Vec4",
            Kernel::ConvF32Block => "ConvF32Block",
            Kernel::ConvF32BlockSubgroup => "ConvF32BlockSubgroup",
            Kernel::ConvF32BlockNarrow => "ConvF32BlockNarrow",
            Kernel::ConvF32BlockNarrowSubgroup => "ConvF32BlockNarrowSubgroup",
            Kernel::ConvDepthwiseF32 => "ConvDepthwiseF32",
            Kernel::ConvDepthwiseF32Subgroup => "ConvDepthwiseF32Subgroup",
            Kernel::Add => "Add",
            Kernel::Prelu => "Prelu",
            Kernel::Relu => "Relu",
            Kernel::Affine => "Affine",
            Kernel::FromRgb8 => "FromRgb8",
            Kernel::FromNchw => "FromNchw",
            Kernel::ToNchw => "ToNchw",
            Kernel::L2Norm => "L2Norm",
            Kernel::Upsample => "Upsample",
            Kernel::UpsampleAdd => "UpsampleAdd",
            Kernel::GalleryScores => "GalleryScores",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kernel::Quantize => quantize::SOURCE,
            Kernel::ConvInt => conv_int::SOURCE,
            Kernel::GemmInt => gemm_int::SOURCE,
            Kernel::ConvDepthwiseInt => conv_dw_int::SOURCE,
            Kernel::ConvF32 => conv_f32::SOURCE,
            Kernel::ConvF32Vec4 => conv_f32_vec4::SOURCE,
            Kernel::ConvF32Block => conv_f32_block::SOURCE,
            Kernel::ConvF32BlockSubgroup => conv_f32_block::SOURCE_SUBGROUP,
            Kernel::ConvF32BlockNarrow => conv_f32_block_narrow::SOURCE,
            Kernel::ConvF32BlockNarrowSubgroup => conv_f32_block_narrow::SOURCE_SUBGROUP,
            Kernel::ConvDepthwiseF32 => conv_dw_f32::SOURCE,
            Kernel::ConvDepthwiseF32Subgroup => conv_dw_f32::SOURCE_SUBGROUP,
            Kernel::Add | Kernel::Prelu | Kernel::Relu | Kernel::Affine => elementwise::SOURCE,
            Kernel::FromRgb8 | Kernel::FromNchw | Kernel::ToNchw => layout::SOURCE,
            Kernel::L2Norm => l2norm::SOURCE,
            Kernel::Upsample => upsample::SOURCE,
            Kernel::UpsampleAdd => upsample::SOURCE_ADD,
            Kernel::GalleryScores => gallery_scores::SOURCE,
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
            Kernel::ConvF32
            | Kernel::ConvF32Vec4
            | Kernel::ConvF32Block
            | Kernel::ConvF32BlockSubgroup
            | Kernel::ConvF32BlockNarrow
            | Kernel::ConvF32BlockNarrowSubgroup
            | Kernel::ConvDepthwiseF32
            | Kernel::ConvDepthwiseF32Subgroup => {
                &[Uniform, Read, Read, Read, Read, ReadWrite, Uniform]
            }
            Kernel::Add | Kernel::Prelu | Kernel::Relu | Kernel::Affine => {
                &[Uniform, Read, Read, Read, ReadWrite]
            }
            Kernel::FromRgb8
            | Kernel::FromNchw
            | Kernel::ToNchw
            | Kernel::L2Norm
            | Kernel::Upsample => &[Uniform, Read, ReadWrite],
            Kernel::UpsampleAdd => &[Uniform, Read, ReadWrite, Read],
            Kernel::GalleryScores => &[Uniform, Read, Read, ReadWrite],
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

/// Workgroup grid for `count` elements at 256 per workgroup, folded into two dimensions when
/// one would exceed `max_dim` (the WGSL side recombines `gid.x + gid.y · nwg.x · 256`).
pub fn grid_1d(count: u64, max_dim: u32) -> [u32; 2] {
    grid_flat(count, 256, max_dim)
}

/// [`grid_1d`] for kernels of `per_group` invocations per workgroup.
pub fn grid_flat(count: u64, per_group: u64, max_dim: u32) -> [u32; 2] {
    let groups = count.div_ceil(per_group).max(1);
    if groups <= max_dim as u64 {
        [groups as u32, 1]
    } else {
        let y = groups.div_ceil(max_dim as u64);
        [groups.div_ceil(y) as u32, y as u32]
    }
}

#[cfg(test)]
mod validation_tests;
