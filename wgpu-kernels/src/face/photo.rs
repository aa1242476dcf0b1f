//! A photo handed to the pipeline: decoded, converted to RGB and checked for size once, with a
//! label that names it in errors.

use std::io::Cursor;

use image::RgbImage;

use super::FaceError;

/// Shortest side a photo may have: below it there is no face to find (SCRFD's smallest anchor
/// is 16 pixels at its 640 input).
pub const MIN_SIDE: usize = 16;

/// Most pixels a photo may have (64 megapixels: 192 MB as RGB), so that a hostile file cannot
/// make the decoder allocate without bound.
pub const MAX_PIXELS: usize = 64 << 20;

/// An RGB photo of any size.
#[derive(Clone, Debug)]
pub struct Photo {
    label: String,
    image: RgbImage,
}

impl Photo {
    /// Wraps an RGB image; `label` names it in errors and reports.
    pub fn from_image(label: impl Into<String>, image: RgbImage) -> Result<Photo, FaceError> {
        let photo = Photo {
            label: label.into(),
            image,
        };
        photo.check_size()?;
        Ok(photo)
    }

    /// Interleaved pixels of `width × height` with 3 (RGB) or 4 (RGBA, e.g. a canvas's
    /// `ImageData`; alpha is dropped) channels.
    pub fn from_pixels(
        label: impl Into<String>,
        pixels: &[u8],
        width: usize,
        height: usize,
        channels: usize,
    ) -> Result<Photo, FaceError> {
        let label = label.into();
        let bad = |why: String| FaceError::BadImage {
            photo: label.clone(),
            why,
        };
        if !(channels == 3 || channels == 4) {
            return Err(bad(format!(
                "pixels must be RGB or RGBA, not {channels} channels"
            )));
        }
        let expected = width
            .checked_mul(height)
            .and_then(|p| p.checked_mul(channels));
        if expected != Some(pixels.len()) {
            return Err(bad(format!(
                "{} bytes are not {width}×{height} pixels of {channels} channels",
                pixels.len()
            )));
        }
        size_ok(&label, width, height)?;
        let rgb = if channels == 4 {
            pixels
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect()
        } else {
            pixels.to_vec()
        };
        let image = RgbImage::from_raw(width as u32, height as u32, rgb)
            .ok_or_else(|| bad("the image does not fit in memory".into()))?;
        Ok(Photo { label, image })
    }

    /// Decodes a JPEG or PNG file's bytes, refusing images over [`MAX_PIXELS`] before their
    /// pixels are allocated.
    pub fn decode(label: impl Into<String>, bytes: &[u8]) -> Result<Photo, FaceError> {
        let label = label.into();
        let bad = |why: String| FaceError::BadImage {
            photo: label.clone(),
            why,
        };
        // A reader with the allocation limit, once for the header and once for the pixels.
        let reader = || -> Result<_, FaceError> {
            let mut r = image::ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| bad(format!("cannot read: {e}")))?;
            if r.format().is_none() {
                return Err(bad("cannot decode: not a JPEG or PNG image".into()));
            }
            let mut limits = image::Limits::default();
            limits.max_alloc = Some((MAX_PIXELS * 4) as u64);
            r.limits(limits);
            Ok(r)
        };
        let (w, h) = reader()?
            .into_dimensions()
            .map_err(|e| bad(format!("cannot decode: {e}")))?;
        size_ok(&label, w as usize, h as usize)?;
        let image = reader()?
            .decode()
            .map_err(|e| bad(format!("cannot decode: {e}")))?
            .to_rgb8();
        Ok(Photo { label, image })
    }

    /// Reads and decodes a JPEG or PNG file, labelled with its path.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Photo, FaceError> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| FaceError::BadImage {
            photo: label.clone(),
            why: format!("cannot read: {e}"),
        })?;
        Photo::decode(label, &bytes)
    }

    /// What errors and reports call this photo.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The pixels.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.image.width() as usize
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.image.height() as usize
    }

    fn check_size(&self) -> Result<(), FaceError> {
        size_ok(&self.label, self.width(), self.height())
    }
}

fn size_ok(label: &str, width: usize, height: usize) -> Result<(), FaceError> {
    let why = if width.min(height) < MIN_SIDE {
        format!("too small to hold a face (the shorter side must be at least {MIN_SIDE} pixels)")
    } else if width.saturating_mul(height) > MAX_PIXELS {
        format!(
            "too large ({:.0} megapixels; at most {:.0} accepted)",
            (width as f64 * height as f64) / 1e6,
            MAX_PIXELS as f64 / 1e6
        )
    } else {
        return Ok(());
    };
    Err(FaceError::ImageSize {
        photo: label.into(),
        width,
        height,
        why,
    })
}
