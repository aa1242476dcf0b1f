//! Device set-up, split from the compute core: either the engine opens its own adapter (the
//! best one wgpu finds, with the largest buffer limits it offers), or an app hands it the
//! `wgpu::Device`/`Queue` it already has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::EngineError;
use crate::kernels::{PipelineKey, Pipelines};

/// How `dot4I8Packed` is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dot4 {
    /// The WGSL `packed_4x8_integer_dot_product` built-ins.
    Native,
    /// Shifts and an i32 dot product, for implementations that lack the extension.
    Polyfill,
}

/// What the engine knows about the adapter it runs on.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// The adapter's name, e.g. `"NVIDIA H100 80GB HBM3"` or `"llvmpipe (LLVM 19.1.1, 256 bits)"`.
    pub name: String,
    /// The wgpu backend: `"Vulkan"`, `"Metal"`, `"Dx12"`, `"Gl"` or `"BrowserWebGpu"`.
    pub backend: String,
    /// wgpu's device type: `"DiscreteGpu"`, `"IntegratedGpu"`, `"Cpu"`, ….
    pub device_type: String,
    /// Driver name and version, where the platform reports them.
    pub driver: String,
    /// True for software rasterisers (lavapipe, llvmpipe, SwiftShader, WARP).
    pub software: bool,
}

impl AdapterSummary {
    /// Summarises wgpu's adapter info.
    pub fn from_info(info: &wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            software: info.device_type == wgpu::DeviceType::Cpu
                || ["llvmpipe", "lavapipe", "swiftshader", "warp", "softpipe"]
                    .iter()
                    .any(|s| info.name.to_lowercase().contains(s)),
        }
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if self.software {
            write!(f, ", software")?;
        }
        write!(f, ")")
    }
}

/// Options for [`Gpu::request`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Restrict to these backends (default: every backend wgpu was built with, or the
    /// `WGPU_BACKEND` environment variable).
    pub backends: Option<wgpu::Backends>,
    /// Force the dot4 polyfill even where the extension exists (to test and compare it).
    pub force_polyfill: bool,
    /// Integer convolutions multiply in exact f32 multiply-adds instead of packed dot4
    /// (identical results; measured slower on lavapipe, so off by default).
    pub float_dot: bool,
    /// Every invocation reads its own weight words in the float block convolution even where
    /// subgroup broadcasts could share them (identical results; to test and compare).
    pub no_subgroups: bool,
}

/// A device and queue plus the engine's compiled pipelines, shared by every model on it.
/// Cloning is cheap: clones share the device and the pipeline cache.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    adapter: AdapterSummary,
    pub(crate) dot4: Dot4,
    /// Integer convolutions accumulate exact integer products in f32 multiply-adds instead of
    /// dot4 (identical results; opt-in).
    float_dot: bool,
    /// The adapter's subgroups can share the float block convolution's weight reads (see
    /// [`Gpu::subgroups`]).
    subgroups_supported: bool,
    subgroups: bool,
    pub(crate) pipelines: Arc<Mutex<HashMap<PipelineKey, Pipelines>>>,
    lost: Arc<Mutex<Option<String>>>,
}

/// Error scopes around one submission (see [`Gpu::error_scopes`]).
pub(crate) struct ErrorScopes {
    oom: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl Gpu {
    /// Opens the best adapter wgpu finds and a device with the largest buffer limits it allows.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), efq_engine::EngineError> {
    /// use efq_engine::{Gpu, GpuOptions};
    /// let gpu = Gpu::request(&GpuOptions::default()).await?;
    /// println!("running on {}", gpu.adapter());
    /// # Ok(()) }
    /// ```
    pub async fn request(options: &GpuOptions) -> Result<Gpu, EngineError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(b) = options.backends {
            desc.backends = b;
        }
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::NoAdapter(format!("backends {backends:?}: {e}")))?;
        let info = adapter.get_info();
        // Everything the adapter offers: large batches need large storage buffers.
        let limits = adapter.limits();
        // Subgroup operations where offered: the float block convolution shares its weight
        // reads through them.
        let features = adapter.features() & wgpu::Features::SUBGROUP;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("efquantface"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        let native = instance
            .wgsl_language_features()
            .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        let dot4 = if native && !options.force_polyfill {
            Dot4::Native
        } else {
            Dot4::Polyfill
        };
        Ok(Gpu::from_device(device, queue, &info, dot4)
            .with_float_dot(options.float_dot)
            .with_subgroups(!options.no_subgroups))
    }

    /// Wraps a device an app already has (its renderer's, say), so the engine shares it.
    /// `dot4` should be [`Dot4::Native`] when `instance.wgsl_language_features()` contains
    /// `Packed4x8IntegerDotProduct`, else [`Dot4::Polyfill`]. The device should allow storage
    /// buffers as large as the model's activations (the adapter's own limits are safest).
    ///
    /// ```no_run
    /// # async fn run(instance: wgpu::Instance, adapter: wgpu::Adapter) -> Result<(), Box<dyn std::error::Error>> {
    /// use efq_engine::{Dot4, Gpu};
    /// let (device, queue) = adapter
    ///     .request_device(&wgpu::DeviceDescriptor {
    ///         required_limits: adapter.limits(),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// let dot4 = if instance
    ///     .wgsl_language_features()
    ///     .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct)
    /// {
    ///     Dot4::Native
    /// } else {
    ///     Dot4::Polyfill
    /// };
    /// let gpu = Gpu::from_device(device, queue, &adapter.get_info(), dot4);
    /// # Ok(()) }
    /// ```
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
        dot4: Dot4,
    ) -> Gpu {
        let lost = Arc::new(Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *flag.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        let adapter = AdapterSummary::from_info(info);
        // The broadcasts read lanes 0–7 of each subgroup, whose lanes share a channel block
        // (a workgroup, of 32 to 64 lanes, owns one). Browsers take WGSL with `enable subgroups;`, which naga does
        // not parse yet, so the WebGPU backend keeps the plain reads.
        let subgroups_supported = device.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size >= 8
            && info.subgroup_max_size <= 64
            && info.backend != wgpu::Backend::BrowserWebGpu;
        // In the browser's threaded build (wasm atomics) wgpu's WebGPU handles are neither Send
        // nor Sync, so neither is this cache; there the engine stays on the thread that made it.
        #[allow(clippy::arc_with_non_send_sync)]
        Gpu {
            device,
            queue,
            float_dot: false,
            subgroups_supported,
            subgroups: subgroups_supported,
            adapter,
            dot4,
            pipelines: Arc::new(Mutex::new(HashMap::new())),
            lost,
        }
    }

    /// Opens the error scopes that [`Gpu::submit_and_read`] closes: validation and
    /// out-of-memory errors raised while the work is recorded come back as errors instead of
    /// reaching wgpu's default handler, which panics.
    pub(crate) fn error_scopes(&self) -> ErrorScopes {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        ErrorScopes { oom, validation }
    }

    /// Submits `encoder`, whose last commands copy the results into `readback`, waits for the
    /// device, and returns `readback`'s first `bytes` as f32s. `what` names the results
    /// ("scores", "results") and `during` the work ("at batch 4") in the errors.
    pub(crate) async fn submit_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        scopes: ErrorScopes,
        readback: &wgpu::Buffer,
        bytes: u64,
        what: &str,
        during: &str,
    ) -> Result<Vec<f32>, EngineError> {
        self.queue.submit([encoder.finish()]);
        // Scopes close in the reverse order of their opening.
        let validation = scopes.validation.pop();
        let oom = scopes.oom.pop();
        let (tx, rx) = futures_channel::oneshot::channel();
        readback
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Gpu(e.to_string()))?;
        if let Some(e) = validation.await {
            return Err(EngineError::Gpu(e.to_string()));
        }
        if let Some(e) = oom.await {
            return Err(EngineError::Gpu(format!("out of GPU memory {during}: {e}")));
        }
        let mapped = rx
            .await
            .map_err(|_| EngineError::DeviceLost("read-back was cancelled".into()))?;
        self.check_alive()?;
        mapped.map_err(|e| EngineError::Gpu(format!("reading {what} back: {e}")))?;
        let values = {
            let view = readback
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| EngineError::Gpu(format!("reading {what} back: {e:?}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        readback.unmap();
        Ok(values)
    }

    /// Fails with [`EngineError::DeviceLost`] once the device is gone.
    pub fn check_alive(&self) -> Result<(), EngineError> {
        match &*self.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(EngineError::DeviceLost(reason.clone())),
            None => Ok(()),
        }
    }

    /// The same device with the integer convolutions' arithmetic chosen (see
    /// [`GpuOptions::float_dot`]); models compiled afterwards use it.
    pub fn with_float_dot(mut self, on: bool) -> Gpu {
        self.float_dot = on;
        self
    }

    /// Whether integer convolutions multiply in f32 multiply-adds rather than dot4.
    pub fn float_dot(&self) -> bool {
        self.float_dot
    }

    /// The same device with subgroup broadcasts in the float block convolution on or off
    /// (on by default where the device supports them; off to compare, or to test the plain
    /// reads); models compiled afterwards use it. Has no effect where they are unsupported.
    pub fn with_subgroups(mut self, on: bool) -> Gpu {
        self.subgroups = on && self.subgroups_supported;
        self
    }

    /// Whether the float block convolution shares weight reads through subgroup broadcasts:
    /// the device has [`wgpu::Features::SUBGROUP`] with 8 to 64 lanes, outside a browser.
    pub fn subgroups(&self) -> bool {
        self.subgroups
    }

    /// How `dot4I8Packed` is reached on this device.
    pub fn dot4(&self) -> Dot4 {
        self.dot4
    }

    /// The adapter the device belongs to.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.adapter
    }

    /// The wgpu device (for an app that draws with it too).
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The device's limits (the largest batch a model can plan for follows from them).
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }
}

/// Blocking helper for native apps and tests: [`Gpu::request`] on the current thread.
///
/// ```no_run
/// let gpu = efq_engine::request_blocking(&Default::default())?;
/// # Ok::<(), efq_engine::EngineError>(())
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub fn request_blocking(options: &GpuOptions) -> Result<Gpu, EngineError> {
    pollster::block_on(Gpu::request(options))
}
