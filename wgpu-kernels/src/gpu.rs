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
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// True for software rasterisers (lavapipe, llvmpipe, SwiftShader, WARP).
    pub software: bool,
}

impl AdapterSummary {
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
    /// How the integer convolutions multiply: packed dot4 (`None`, the default everywhere) or
    /// exact f32 multiply-adds (`Some(true)`; identical results, measured slower on lavapipe).
    pub float_dot: Option<bool>,
}

/// A device and queue plus the engine's compiled pipelines, shared by every model on it.
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub dot4: Dot4,
    /// Integer convolutions accumulate exact integer products in f32 multiply-adds instead of
    /// dot4 (identical results; opt-in).
    pub float_dot: bool,
    pub(crate) pipelines: Arc<Mutex<HashMap<PipelineKey, Pipelines>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Opens the best adapter wgpu finds and a device with the largest buffer limits it allows.
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
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("efquantface"),
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
        let mut gpu = Gpu::from_device(device, queue, &info, dot4);
        if let Some(f) = options.float_dot {
            gpu.float_dot = f;
        }
        Ok(gpu)
    }

    /// Wraps a device an app already has. `dot4` should be [`Dot4::Native`] when
    /// `instance.wgsl_language_features()` contains `Packed4x8IntegerDotProduct`.
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
        // In the browser's threaded build (wasm atomics) wgpu's WebGPU handles are neither Send
        // nor Sync, so neither is this cache; there the engine stays on the thread that made it.
        #[allow(clippy::arc_with_non_send_sync)]
        Gpu {
            device,
            queue,
            float_dot: false,
            adapter,
            dot4,
            pipelines: Arc::new(Mutex::new(HashMap::new())),
            lost,
        }
    }

    /// Fails with [`EngineError::DeviceLost`] once the device is gone.
    pub fn check_alive(&self) -> Result<(), EngineError> {
        match &*self.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(EngineError::DeviceLost(reason.clone())),
            None => Ok(()),
        }
    }

    pub fn float_dot(&self) -> bool {
        self.float_dot
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }
}

/// Blocking helper for native apps and tests: [`Gpu::request`] on the current thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn request_blocking(options: &GpuOptions) -> Result<Gpu, EngineError> {
    pollster::block_on(Gpu::request(options))
}
