//! `gallery_scores.wgsl`: cosines of a batch of probes against every row of a gallery.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("gallery_scores.wgsl");

/// Gallery rows one workgroup scores (the shader's `ROWS`, its workgroup size).
pub const GALLERY_ROWS_PER_GROUP: u32 = 64;
/// The most probes one workgroup scores at once (the shader's `MAX_PROBES`).
pub const GALLERY_MAX_PROBES: u32 = 16;

/// Field for field the `Params` of `gallery_scores.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GalleryScoresParams {
    pub rows: u32,
    pub dim: u32,
    pub probes: u32,
    pub stride: u32,
    pub first_row: u32,
    pub _pad: [u32; 3],
}
