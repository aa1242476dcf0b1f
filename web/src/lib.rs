//! Browser bindings (issue #5): load a packed model from bytes, run it on WebGPU through the
//! engine or on the CPU backend (exact integer arithmetic) compiled to wasm, and embed or
//! verify faces given as canvas pixels. [`FaceDetector`] and [`align_face_rgba`] (issue #6)
//! find faces in whole photos with SCRFD on the same two paths and cut the ArcFace-aligned
//! 112×112 crops.
//!
//! Everything a page needs to say about the run is in [`Verifier::describe`]: which path is in
//! use and why, the adapter, whether `dot4I8Packed` is native, the model's size and bit-widths.
//! The page (`www/`) runs this module in a dedicated worker, so a slow CPU forward pass never
//! freezes the tab.

use efq_engine::face;
use efq_engine::{Dot4, Gpu, GpuModel, GpuOptions, Images};
use efq_shared::align::align_face;
use efq_shared::detect::Detection;
use efq_shared::format::{Manifest, PackedModel};
use efq_shared::graph::Graph;
use efq_shared::{cpu, preprocess};
use serde_json::json;
use wasm_bindgen::prelude::*;

mod profile;
pub use profile::{now_ms, profile_detector};

/// Largest model file the page accepts (the engine checks device limits on top of this).
pub const MAX_MODEL_BYTES: usize = 256 << 20;

/// The engine's integer-convolution arithmetic on the web: packed dot4 (`false`), the
/// arithmetic real GPUs use. The f32 multiply-add path (the engine's default on software
/// adapters) is bit-exact in Chromium too since the engine zeroes its per-chunk accumulators
/// explicitly (`engine_float_dot_path_in_browser`); at engine f2101c6 SwiftShader did not
/// re-zero that loop-scoped array and the embeddings were wrong (cosine 0.51).
pub const DEFAULT_FLOAT_DOT: bool = false;

/// Images per GPU submission the model is planned for (larger batches are split).
pub const GPU_MAX_BATCH: usize = 32;

/// Starts the CPU path's worker threads (the `threads` build only; the page calls it once, in
/// a cross-origin-isolated context, before any inference).
#[cfg(all(feature = "threads", target_arch = "wasm32"))]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Threads the CPU path runs on: 1 in the single-threaded build.
#[wasm_bindgen(js_name = cpuThreads)]
pub fn cpu_threads() -> usize {
    #[cfg(all(feature = "threads", target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(not(all(feature = "threads", target_arch = "wasm32")))]
    1
}

#[wasm_bindgen(js_name = maxModelBytes)]
pub fn max_model_bytes() -> usize {
    MAX_MODEL_BYTES
}

/// Parses a packed model file and returns its manifest as JSON, or an error naming what is wrong.
#[wasm_bindgen]
pub fn describe_model(bytes: &[u8]) -> Result<String, JsError> {
    let model = parse_model(bytes).map_err(|e| JsError::new(&e))?;
    Ok(serde_json::to_string(&model.manifest).expect("manifest serialises"))
}

/// Which execution path to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// WebGPU when an adapter exists and is not a software rasteriser, else the CPU.
    Auto,
    WebGpu,
    Cpu,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Backend::Auto),
            "webgpu" | "gpu" => Ok(Backend::WebGpu),
            "cpu" | "wasm" => Ok(Backend::Cpu),
            other => Err(format!(
                "unknown backend {other:?}: use auto, webgpu or cpu"
            )),
        }
    }
}

/// Validates the size, then the packed format (the loader names what is wrong).
pub fn parse_model(bytes: &[u8]) -> Result<PackedModel, String> {
    if bytes.len() > MAX_MODEL_BYTES {
        return Err(format!(
            "model file is {:.1} MB, more than the {} MB this page accepts",
            bytes.len() as f64 / 1e6,
            MAX_MODEL_BYTES >> 20
        ));
    }
    if bytes.is_empty() {
        return Err("model file is empty".into());
    }
    PackedModel::from_bytes(bytes).map_err(|e| format!("not a usable EfQuantFace model: {e}"))
}

/// The CPU path: the shared CPU backend (exact integer arithmetic).
pub struct CpuModel {
    pub graph: Graph,
    pub manifest: Manifest,
}

impl CpuModel {
    /// L2-normalised embeddings of `n` RGB images.
    pub fn embed_rgb(&self, rgb: &[u8], n: usize) -> Result<Vec<f32>, String> {
        let x = self.input(rgb, n)?;
        let mut e = cpu::forward(&self.graph, &x, n).map_err(|e| e.to_string())?;
        cpu::l2_normalize_rows(&mut e, self.manifest.embedding_dim);
        Ok(e)
    }

    /// Raw network outputs of `n` RGB images (what the engine's `forward` returns).
    pub fn forward_rgb(&self, rgb: &[u8], n: usize) -> Result<Vec<f32>, String> {
        let x = self.input(rgb, n)?;
        cpu::forward(&self.graph, &x, n).map_err(|e| e.to_string())
    }

    pub(crate) fn input(&self, rgb: &[u8], n: usize) -> Result<Vec<f32>, String> {
        let [_, h, w] = self.manifest.input_shape;
        check_len(rgb.len(), n, h * w * 3, h, w, 3)?;
        let pre = &self.manifest.preprocessing;
        Ok(rgb
            .chunks_exact(h * w * 3)
            .flat_map(|img| preprocess::pixels_to_chw(img, w, h, pre))
            .collect())
    }
}

fn check_len(got: usize, n: usize, per: usize, h: usize, w: usize, c: usize) -> Result<(), String> {
    if n == 0 || got != n * per {
        return Err(format!(
            "expected {n} image(s) of {w}×{h} with {c} channels ({} bytes), got {got} bytes",
            n * per
        ));
    }
    Ok(())
}

/// RGBA (canvas `ImageData`) to RGB.
pub fn rgba_to_rgb(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

struct Busy<'a>(&'a std::cell::Cell<bool>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

enum Runner {
    Gpu(Box<GpuModel>),
    Cpu(Box<CpuModel>),
}

/// A loaded model on its execution path.
#[wasm_bindgen]
pub struct Verifier {
    runner: Runner,
    /// A GPU model has one set of buffers: one request at a time.
    busy: std::cell::Cell<bool>,
    report: serde_json::Value,
    input_shape: [usize; 3],
    dim: usize,
    threshold: Option<f32>,
}

/// " (name)" or nothing: browsers may hide the adapter's name.
fn named(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" ({name})")
    }
}

/// Opens WebGPU, or says why not.
async fn open_gpu(float_dot: bool) -> Result<Gpu, String> {
    #[cfg(target_arch = "wasm32")]
    if !wgpu::util::is_browser_webgpu_supported().await {
        return Err("this browser does not expose WebGPU (navigator.gpu is missing)".into());
    }
    Gpu::request(&GpuOptions {
        float_dot,
        ..GpuOptions::default()
    })
    .await
    .map_err(|e| e.to_string())
}

#[wasm_bindgen]
impl Verifier {
    /// Loads a packed model (`.efq` bytes) on `backend` (`auto`, `webgpu` or `cpu`).
    /// `float_dot` picks the engine's convolution arithmetic (default [`DEFAULT_FLOAT_DOT`]).
    pub async fn load(
        bytes: Vec<u8>,
        backend: String,
        float_dot: Option<bool>,
    ) -> Result<Verifier, JsError> {
        Verifier::load_native(&bytes, &backend, float_dot.unwrap_or(DEFAULT_FLOAT_DOT))
            .await
            .map_err(|e| JsError::new(&e))
    }

    /// JSON: `{backend, reason, adapter, dot4, model: {...}}`.
    pub fn describe(&self) -> String {
        self.report.to_string()
    }

    /// `"webgpu"` or `"cpu"`.
    pub fn backend(&self) -> String {
        self.report["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Uses this cosine threshold for decisions (models without a stored one).
    #[wasm_bindgen(js_name = setThreshold)]
    pub fn set_threshold(&mut self, cosine: f32) {
        self.threshold = Some(cosine);
        self.report["threshold"] = json!({"cosine": cosine, "source": "set by the page"});
    }

    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// L2-normalised embeddings (`n × dim`) of `n` images given as RGBA (`channels` = 4, canvas
    /// `ImageData`) or RGB (3) bytes of the model's input size.
    pub async fn embed(
        &self,
        pixels: Vec<u8>,
        n: usize,
        channels: usize,
    ) -> Result<Vec<f32>, JsError> {
        self.embed_native(&pixels, n, channels)
            .await
            .map_err(|e| JsError::new(&e))
    }

    /// Raw network outputs (before L2 normalisation) of `n` RGB/RGBA images.
    pub async fn forward(
        &self,
        pixels: Vec<u8>,
        n: usize,
        channels: usize,
    ) -> Result<Vec<f32>, JsError> {
        let rgb = self
            .rgb(&pixels, n, channels)
            .map_err(|e| JsError::new(&e))?;
        match &self.runner {
            Runner::Gpu(m) => m
                .forward(Images::Nchw(&self.chw(&rgb, m.info())), n)
                .await
                .map_err(|e| JsError::new(&e.to_string())),
            Runner::Cpu(m) => m.forward_rgb(&rgb, n).map_err(|e| JsError::new(&e)),
        }
    }

    /// Compares two aligned faces as the engine's face pipeline does (each embedding the flip
    /// test's: the face plus its mirror image, as stored thresholds are measured): JSON
    /// `{similarity, threshold, same}` (`same` is null without a threshold).
    pub async fn verify(&self, a: Vec<u8>, b: Vec<u8>, channels: usize) -> Result<String, JsError> {
        let mut both = a;
        both.extend_from_slice(&b);
        let e = self
            .flip_embed_native(&both, 2, channels)
            .await
            .map_err(|e| JsError::new(&e))?;
        let similarity: f32 = e[0].iter().zip(&e[1]).map(|(x, y)| x * y).sum();
        Ok(json!({
            "similarity": similarity,
            "threshold": self.threshold,
            "same": self.threshold.map(|t| similarity >= t),
        })
        .to_string())
    }
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
impl Verifier {
    /// Where a WebGPU forward pass of `n` images goes: JSON `[{node, kernel, ms}]`, each
    /// dispatch submitted and awaited on its own, timed by `clock` (the caller's
    /// `performance.now`, in ms). Run it twice and read the second: the first also pays for
    /// the browser's shader compilation.
    pub async fn profile(
        &self,
        pixels: Vec<u8>,
        n: usize,
        channels: usize,
        clock: js_sys::Function,
    ) -> Result<String, JsError> {
        let rgb = self
            .rgb(&pixels, n, channels)
            .map_err(|e| JsError::new(&e))?;
        let Runner::Gpu(m) = &self.runner else {
            return Err(JsError::new("profile needs the WebGPU path"));
        };
        let _busy = self.claim().map_err(|e| JsError::new(&e))?;
        let now = || {
            clock
                .call0(&JsValue::NULL)
                .ok()
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN)
                / 1e3
        };
        let steps = m
            .profile_with(&self.chw(&rgb, m.info()), n, &now)
            .await
            .map_err(|e| JsError::new(&e.to_string()))?;
        let rows: Vec<_> = steps
            .iter()
            .map(|r| json!({"node": r.node, "kernel": r.kernel, "ms": r.seconds * 1e3}))
            .collect();
        Ok(serde_json::Value::from(rows).to_string())
    }
}

impl Verifier {
    /// [`Verifier::load`] with plain errors (for Rust callers and tests).
    /// `float_dot`: the engine's integer-convolution arithmetic (see [`DEFAULT_FLOAT_DOT`]).
    pub async fn load_native(
        bytes: &[u8],
        backend: &str,
        float_dot: bool,
    ) -> Result<Verifier, String> {
        let choice = Backend::parse(backend)?;
        let packed = parse_model(bytes)?;
        let manifest = packed.manifest.clone();
        let path = pick_path(choice, float_dot).await?;
        let mut gpu_bytes = serde_json::Value::Null;
        let runner = match &path.gpu {
            Some(gpu) => {
                let m = GpuModel::new(gpu, &packed, GPU_MAX_BATCH)
                    .map_err(|e| format!("cannot load the model on WebGPU: {e}"))?;
                gpu_bytes = json!({
                    "parameters": m.info().gpu_parameter_bytes,
                    "activations": m.info().gpu_activation_bytes,
                    "max_batch": m.info().max_batch,
                    "dispatches": m.info().dispatches,
                });
                Some(Runner::Gpu(Box::new(m)))
            }
            None => None,
        };
        let Path {
            reason,
            adapter,
            dot4,
            arithmetic,
            ..
        } = path;
        let runner = match runner {
            Some(r) => r,
            None => Runner::Cpu(Box::new(CpuModel {
                graph: packed.graph.clone(),
                manifest: manifest.clone(),
            })),
        };
        let backend = match runner {
            Runner::Gpu(_) => "webgpu",
            Runner::Cpu(_) => "cpu",
        };
        let threshold = manifest.threshold.as_ref().map(|t| t.cosine);
        let report = json!({
            "backend": backend,
            "reason": reason,
            "adapter": adapter,
            "dot4": dot4,
            "arithmetic": arithmetic,
            "cpu_threads": cpu_threads(),
            "gpu_memory": gpu_bytes,
            "threshold": manifest.threshold,
            "model": {
                "name": manifest.name,
                "file_bytes": bytes.len(),
                "parameter_bytes": packed.parameter_bytes(),
                "quant": manifest.quant.map(|q| q.label()),
                "bits": manifest.quant,
                "input_shape": manifest.input_shape,
                "embedding_dim": manifest.embedding_dim,
            },
        });
        Ok(Verifier {
            runner,
            busy: std::cell::Cell::new(false),
            report,
            input_shape: manifest.input_shape,
            dim: manifest.embedding_dim,
            threshold,
        })
    }

    /// [`Verifier::embed`] with plain errors.
    pub async fn embed_native(
        &self,
        pixels: &[u8],
        n: usize,
        channels: usize,
    ) -> Result<Vec<f32>, String> {
        let rgb = self.rgb(pixels, n, channels)?;
        let _busy = self.claim()?;
        match &self.runner {
            Runner::Gpu(m) => m
                .embed(Images::Rgb8(&rgb), n)
                .await
                .map_err(|e| e.to_string()),
            Runner::Cpu(m) => m.embed_rgb(&rgb, n),
        }
    }

    /// Flip-test embeddings (`efq_engine::face::flip_test_embeddings`) of `n` RGB/RGBA faces.
    pub async fn flip_embed_native(
        &self,
        pixels: &[u8],
        n: usize,
        channels: usize,
    ) -> Result<Vec<Vec<f32>>, String> {
        let rgb = self.rgb(pixels, n, channels)?;
        let [_, _, w] = self.input_shape;
        let _busy = self.claim()?;
        let raw = match &self.runner {
            Runner::Gpu(m) => {
                let x = face::with_mirrors(self.chw(&rgb, m.info()), w);
                m.forward(Images::Nchw(&x), 2 * n)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Runner::Cpu(m) => {
                let x = face::with_mirrors(m.input(&rgb, n)?, w);
                cpu::forward(&m.graph, &x, 2 * n).map_err(|e| e.to_string())?
            }
        };
        Ok(face::flip_test_embeddings(&raw, n, self.dim))
    }

    /// Marks the model busy until the returned guard drops.
    fn claim(&self) -> Result<Busy<'_>, String> {
        if self.busy.replace(true) {
            return Err("the model is still busy with the previous request: await it first".into());
        }
        Ok(Busy(&self.busy))
    }

    fn rgb(&self, pixels: &[u8], n: usize, channels: usize) -> Result<Vec<u8>, String> {
        let [c, h, w] = self.input_shape;
        if c != 3 {
            return Err(format!("the model takes {c} input channels, not RGB"));
        }
        check_len(pixels.len(), n, h * w * channels, h, w, channels)?;
        match channels {
            3 => Ok(pixels.to_vec()),
            4 => Ok(rgba_to_rgb(pixels)),
            _ => Err(format!(
                "pixels must be RGB or RGBA, not {channels} channels"
            )),
        }
    }

    fn chw(&self, rgb: &[u8], info: &efq_engine::ModelInfo) -> Vec<f32> {
        let [_, h, w] = self.input_shape;
        rgb.chunks_exact(h * w * 3)
            .flat_map(|img| preprocess::pixels_to_chw(img, w, h, &info.preprocessing))
            .collect()
    }
}

/// Detector input sizes tried in turn (the engine pipeline's: 640, then 320 for close-ups).
pub use efq_engine::face::DETECT_SIZES;

/// Largest detector file the page accepts.
pub const MAX_DETECTOR_BYTES: usize = 64 << 20;

/// SCRFD through the engine's face pipeline (`efq_engine::face`, as apps and `trainer` run it):
/// on WebGPU (the engine's float path) or on the CPU backend in wasm, chosen like
/// [`Verifier`]'s path.
#[wasm_bindgen]
pub struct FaceDetector {
    inner: face::FaceDetector,
    report: serde_json::Value,
}

/// What one photo gave: every face (original pixels, best first) and the one kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaceReport {
    pub faces: Vec<Detection>,
    /// Index into `faces` of the face the pipeline chooses (nearest the photo's centre).
    pub chosen: Option<usize>,
    /// Detector input size that found them (0: none found).
    pub size: usize,
}

#[wasm_bindgen]
impl FaceDetector {
    /// Loads an SCRFD ONNX file (`scrfd_500m_bnkps.onnx`) on `backend` (`auto`, `webgpu`, `cpu`).
    pub async fn load(bytes: Vec<u8>, backend: String) -> Result<FaceDetector, JsError> {
        FaceDetector::load_native(&bytes, &backend)
            .await
            .map_err(|e| JsError::new(&e))
    }

    /// JSON: `{backend, reason, adapter, sizes}`.
    pub fn describe(&self) -> String {
        self.report.to_string()
    }

    /// Faces in an RGBA (`channels` 4) or RGB (3) photo of `width × height`: JSON
    /// [`FaceReport`].
    pub async fn detect(
        &self,
        pixels: Vec<u8>,
        width: usize,
        height: usize,
        channels: usize,
    ) -> Result<String, JsError> {
        let r = self
            .detect_native(&pixels, width, height, channels)
            .await
            .map_err(|e| JsError::new(&e))?;
        Ok(serde_json::to_string(&r).expect("report serialises"))
    }

    /// Faces in several photos, as [`FaceDetector::detect`] finds them in each, in one call:
    /// on the CPU path the photos share each network pass, one photo per thread in the
    /// threaded build (rather than one photo after the other, each layer split across the
    /// threads). `pixels` holds the photos one after the other, photo `i` being
    /// `widths[i] × heights[i] × channels` bytes. JSON: an array of [`FaceReport`].
    #[wasm_bindgen(js_name = detectBatch)]
    pub async fn detect_batch(
        &self,
        pixels: Vec<u8>,
        widths: Vec<u32>,
        heights: Vec<u32>,
        channels: usize,
    ) -> Result<String, JsError> {
        let r = self
            .detect_batch_native(&pixels, &widths, &heights, channels)
            .await
            .map_err(|e| JsError::new(&e))?;
        Ok(serde_json::to_string(&r).expect("reports serialise"))
    }
}

impl FaceDetector {
    /// [`FaceDetector::load`] with plain errors.
    pub async fn load_native(bytes: &[u8], backend: &str) -> Result<FaceDetector, String> {
        let choice = Backend::parse(backend)?;
        if bytes.len() > MAX_DETECTOR_BYTES {
            return Err(format!(
                "detector file is {:.1} MB, more than the {} MB this page accepts",
                bytes.len() as f64 / 1e6,
                MAX_DETECTOR_BYTES >> 20
            ));
        }
        let path = pick_path(choice, DEFAULT_FLOAT_DOT).await?;
        let runtime = match &path.gpu {
            Some(g) => face::Runtime::Gpu(g.clone()),
            None => face::Runtime::Cpu,
        };
        let loaded = face::FaceDetector::from_bytes(bytes, "detector", &DETECT_SIZES, &runtime);
        // On the CPU path a batch is one photo per thread (no buffers to grow); on WebGPU
        // each photo of a batch would add ~40 MB of buffers, so photos go one at a time.
        let loaded = match runtime {
            face::Runtime::Cpu => loaded.and_then(|d| d.with_batch(cpu_threads())),
            face::Runtime::Gpu(_) => loaded,
        };
        let inner = loaded.map_err(|e| match e {
            face::FaceError::NotADetector { why, .. } => {
                format!("not a usable SCRFD detector: {why}")
            }
            other => format!("cannot load the detector on WebGPU: {other}"),
        })?;
        let report = json!({
            "backend": if path.gpu.is_some() { "webgpu" } else { "cpu" },
            "reason": path.reason,
            "adapter": path.adapter,
            "sizes": DETECT_SIZES,
        });
        Ok(FaceDetector { inner, report })
    }

    /// [`FaceDetector::detect`] with plain errors.
    pub async fn detect_native(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
        channels: usize,
    ) -> Result<FaceReport, String> {
        let photo = face::Photo::from_pixels("the photo", pixels, width, height, channels)
            .map_err(|e| e.to_string())?;
        let found = self.inner.detect(&photo).await.map_err(|e| e.to_string())?;
        Ok(report(&photo, found))
    }

    /// [`FaceDetector::detect_batch`] with plain errors.
    pub async fn detect_batch_native(
        &self,
        pixels: &[u8],
        widths: &[u32],
        heights: &[u32],
        channels: usize,
    ) -> Result<Vec<FaceReport>, String> {
        let photos = split_photos(pixels, widths, heights, channels)?;
        let refs: Vec<&face::Photo> = photos.iter().collect();
        let found = self
            .inner
            .detect_batch(&refs)
            .await
            .map_err(|e| e.to_string())?;
        Ok(photos
            .iter()
            .zip(found)
            .map(|(p, f)| report(p, f))
            .collect())
    }
}

fn report(photo: &face::Photo, found: face::Faces) -> FaceReport {
    FaceReport {
        chosen: found.choose(photo, face::Choice::Central).ok(),
        faces: found.faces,
        size: found.size,
    }
}

/// Photos laid one after the other in `pixels` (photo `i`: `widths[i] × heights[i] ×
/// channels` bytes), labelled "photo 1", "photo 2", …, or what is wrong with the layout.
fn split_photos(
    pixels: &[u8],
    widths: &[u32],
    heights: &[u32],
    channels: usize,
) -> Result<Vec<face::Photo>, String> {
    if widths.is_empty() || widths.len() != heights.len() {
        return Err(format!(
            "{} widths and {} heights: give one of each per photo, at least one photo",
            widths.len(),
            heights.len()
        ));
    }
    let mut rest = pixels;
    let mut photos = Vec::with_capacity(widths.len());
    for (i, (&w, &h)) in widths.iter().zip(heights).enumerate() {
        let label = format!("photo {}", i + 1);
        let (w, h) = (w as usize, h as usize);
        let len = w
            .checked_mul(h)
            .and_then(|p| p.checked_mul(channels))
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| {
                format!(
                    "{label}: {w}×{h} pixels of {channels} channels do not fit in the {} bytes left",
                    rest.len()
                )
            })?;
        let (this, next) = rest.split_at(len);
        photos.push(
            face::Photo::from_pixels(label, this, w, h, channels).map_err(|e| e.to_string())?,
        );
        rest = next;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes are left after the {} photos",
            rest.len(),
            widths.len()
        ));
    }
    Ok(photos)
}

/// An RGBA/RGB buffer of `width × height` as an image, or what is wrong with it.
fn rgb_image(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<image::RgbImage, String> {
    if !(channels == 3 || channels == 4) {
        return Err(format!(
            "pixels must be RGB or RGBA, not {channels} channels"
        ));
    }
    if width == 0 || height == 0 {
        return Err(format!("a photo of {width}×{height} pixels has none"));
    }
    let per = width
        .checked_mul(height)
        .and_then(|px| px.checked_mul(channels))
        .ok_or_else(|| format!("a {width}×{height} image does not fit in memory"))?;
    check_len(pixels.len(), 1, per, height, width, channels)?;
    let rgb = if channels == 4 {
        rgba_to_rgb(pixels)
    } else {
        pixels.to_vec()
    };
    image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| format!("a {width}×{height} image does not fit in memory"))
}

/// The 112×112 ArcFace crop (RGBA, for a canvas) of the face with five keypoints `kps`
/// (`[x0, y0, … x4, y4]` in photo pixels) in an RGBA/RGB photo of `width × height`.
#[wasm_bindgen(js_name = alignFace)]
pub fn align_face_rgba(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    kps: &[f32],
) -> Result<Vec<u8>, JsError> {
    align_native(pixels, width, height, channels, kps).map_err(|e| JsError::new(&e))
}

/// [`align_face_rgba`] with plain errors.
pub fn align_native(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    kps: &[f32],
) -> Result<Vec<u8>, String> {
    let img = rgb_image(pixels, width, height, channels)?;
    let [a, b, c, d, e, f, g, h, i, j] = kps else {
        return Err(format!("five keypoints are ten numbers, got {}", kps.len()));
    };
    let pts = [[*a, *b], [*c, *d], [*e, *f], [*g, *h], [*i, *j]];
    let crop = align_face(&img, &pts).ok_or("the five keypoints are degenerate (coincide)")?;
    Ok(crop
        .pixels()
        .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
        .collect())
}

/// The execution path of a model: an open WebGPU device or the CPU, and why.
struct Path {
    gpu: Option<Gpu>,
    reason: String,
    /// The adapter, its `dot4I8Packed` support and the convolution arithmetic, whenever one
    /// was opened (also when the CPU path is then chosen over a software rasteriser).
    adapter: serde_json::Value,
    dot4: serde_json::Value,
    arithmetic: serde_json::Value,
}

/// Opens WebGPU unless the CPU is asked for; with `auto`, a software rasteriser or a missing
/// WebGPU means the CPU path.
async fn pick_path(choice: Backend, float_dot: bool) -> Result<Path, String> {
    let cpu = |reason: String| Path {
        gpu: None,
        reason,
        adapter: serde_json::Value::Null,
        dot4: serde_json::Value::Null,
        arithmetic: serde_json::Value::Null,
    };
    if choice == Backend::Cpu {
        return Ok(cpu("CPU path requested".into()));
    }
    match open_gpu(float_dot).await {
        Ok(gpu) => {
            let mut path = Path {
                reason: String::new(),
                adapter: json!({
                    "name": gpu.adapter().name,
                    "backend": gpu.adapter().backend,
                    "device_type": gpu.adapter().device_type,
                    "driver": gpu.adapter().driver,
                    "software": gpu.adapter().software,
                }),
                dot4: json!(match gpu.dot4() {
                    Dot4::Native => "native",
                    Dot4::Polyfill => "polyfill",
                }),
                arithmetic: json!(if gpu.float_dot() {
                    "f32 multiply-add"
                } else {
                    "dot4"
                }),
                gpu: None,
            };
            if choice == Backend::Auto && gpu.adapter().software {
                path.reason = format!(
                    "the WebGPU adapter{} is a software rasteriser; the CPU path is used \
                     (force WebGPU with ?backend=webgpu)",
                    named(&gpu.adapter().name)
                );
            } else {
                path.reason = if choice == Backend::WebGpu {
                    "WebGPU requested".to_string()
                } else {
                    format!("a hardware WebGPU adapter{}", named(&gpu.adapter().name))
                };
                path.gpu = Some(gpu);
            }
            Ok(path)
        }
        Err(e) if choice == Backend::Auto => {
            Ok(cpu(format!("no WebGPU ({e}); the CPU path is used")))
        }
        Err(e) => Err(format!("WebGPU requested but unavailable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::rgb_image;

    #[test]
    fn photos_without_pixels_or_with_sizes_that_overflow_are_refused() {
        for (w, h) in [(0, 0), (0, 8), (8, 0)] {
            let e = rgb_image(&[], w, h, 3).unwrap_err();
            assert!(e.contains("has none"), "{w}×{h}: {e}");
        }
        let e = rgb_image(&[0; 12], usize::MAX / 2, 3, 4).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        let e = rgb_image(&[0; 11], 2, 2, 3).unwrap_err();
        assert!(e.contains("12 bytes"), "{e}");
        assert_eq!(
            rgb_image(&[7; 16], 2, 2, 4).unwrap().into_raw(),
            vec![7; 12]
        );
    }
}
