//! `efq-desktop`: two photos, their faces and the verdict — same person or not — plus 1:N
//! search in a gallery, with the engine on the very GPU device egui draws with.
//!
//! ```text
//! cargo run --release -p efq-desktop -- --a A.jpg --b B.jpg
//! ```

mod app;
mod draw;
mod gallery;
mod panels;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use clap::Parser;

/// Window size in points (and pixels under Xvfb, whose scale factor is 1).
pub const WINDOW: [f32; 2] = [1280.0, 800.0];

/// Face verification and 1:N search on the GPU egui renders with.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Recognizer: a packed `.efq` student, ONNX or arcface_torch `.pth`.
    #[arg(long, env = "EFQ_TEACHER")]
    pub model: PathBuf,
    /// SCRFD face detector (ONNX).
    #[arg(long, env = "EFQ_DETECTOR")]
    pub detector: PathBuf,
    /// Cosine to decide at when the model stores no threshold (ONNX and `.pth` store none).
    #[arg(long, value_name = "COS")]
    pub threshold: Option<f32>,
    /// Photo A.
    #[arg(long, value_name = "PHOTO")]
    pub a: Option<PathBuf>,
    /// Photo B.
    #[arg(long, value_name = "PHOTO")]
    pub b: Option<PathBuf>,
    /// Once both photos are processed and the verdict painted, save the window as this PNG,
    /// print the verdict as one JSON line and exit (non-zero after any error).
    #[arg(long, value_name = "OUT.png")]
    pub screenshot: Option<PathBuf>,
}

fn main() {
    let start = Instant::now();
    let args = Args::parse();
    // Where the app records a failure in --screenshot mode; read once the window is closed.
    let exit = Arc::new(AtomicI32::new(0));
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("EfQuantFace")
            .with_inner_size(WINDOW)
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: wgpu_options(),
        ..Default::default()
    };
    let code = exit.clone();
    let result = eframe::run_native(
        "EfQuantFace",
        options,
        Box::new(move |cc| Ok(Box::new(app::App::new(cc, args, start, code)?))),
    );
    if let Err(e) = result {
        eprintln!("efq-desktop: {e}");
        std::process::exit(2);
    }
    std::process::exit(exit.load(Ordering::SeqCst));
}

/// egui's own device request asks for wgpu's default limits, too small for the engine (it
/// needs e.g. more storage buffers per stage and larger bindings): ask for everything the
/// adapter offers, as `Gpu::request` does.
fn wgpu_options() -> egui_wgpu::WgpuConfiguration {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.device_descriptor = Arc::new(|adapter| wgpu::DeviceDescriptor {
        label: Some("efq-desktop"),
        required_limits: adapter.limits(),
        ..Default::default()
    });
    egui_wgpu::WgpuConfiguration {
        wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(setup),
        ..Default::default()
    }
}
