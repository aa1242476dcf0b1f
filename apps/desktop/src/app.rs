//! The window's state: the engine (on egui's own device, through a worker thread), the two
//! photo slots, the verdict, the gallery, and the `--screenshot` run that ends the process.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use anyhow::Context as _;
use efq_engine::face::Runtime;
use efq_engine::{Dot4, Gpu};
use egui::{ColorImage, TextureOptions};

use crate::Args;
use crate::gallery::GalleryPanel;
use crate::panels::{self, Action, Slot};
use crate::worker::{self, Engine, Reply, Request, Verdict};

mod shot;
use shot::Shot;

/// The app.
pub struct App {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    /// `Ok(None)` while the models compile.
    engine: Result<Option<Engine>, String>,
    /// The adapter egui and the engine share.
    adapter: String,
    slots: [Slot; 2],
    /// Where each photo panel was last drawn, to tell which one a file is dropped on.
    slot_rects: [egui::Rect; 2],
    verdict: Option<Verdict>,
    /// Requests sent and not yet answered by their closing verdict.
    pending: usize,
    gallery: GalleryPanel,
    shot: Option<Shot>,
    clock: Clock,
    exit: Arc<AtomicI32>,
}

/// Milestones since the process started, in milliseconds, reported on stderr with
/// `--screenshot`.
struct Clock {
    start: Instant,
    window: f64,
    first_ui: Option<f64>,
    second_ui: Option<f64>,
    engine_ready: Option<f64>,
}

impl Clock {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }
}

impl App {
    /// Hands egui's device to the engine, starts the worker and opens the photos of `args`.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        args: Args,
        start: Instant,
        exit: Arc<AtomicI32>,
    ) -> anyhow::Result<App> {
        let rs = cc
            .wgpu_render_state
            .as_ref()
            .context("eframe gave no wgpu render state: the engine needs egui's wgpu device")?;
        let dot4 = if rs
            .instance
            .wgsl_language_features()
            .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct)
        {
            Dot4::Native
        } else {
            Dot4::Polyfill
        };
        let info = rs.adapter.get_info();
        // The same device and queue egui draws with: photos never leave for another device.
        let gpu = Gpu::from_device(rs.device.clone(), rs.queue.clone(), &info, dot4);
        let adapter = gpu.adapter().to_string();
        let config = worker::Config {
            model: args.model.clone(),
            detector: args.detector.clone(),
            threshold: args.threshold,
            runtime: Runtime::Gpu(gpu),
        };
        let ctx = cc.egui_ctx.clone();
        let (requests, replies) = worker::spawn(config, move || ctx.request_repaint());
        let shot = args.screenshot.clone().map(Shot::new);
        let mut app = App {
            requests,
            replies,
            engine: Ok(None),
            adapter,
            slots: Default::default(),
            slot_rects: [egui::Rect::NOTHING; 2],
            verdict: None,
            pending: 0,
            gallery: GalleryPanel::default(),
            shot,
            clock: Clock {
                start,
                window: start.elapsed().as_secs_f64() * 1e3,
                first_ui: None,
                second_ui: None,
                engine_ready: None,
            },
            exit,
        };
        for (slot, path) in [args.a, args.b].into_iter().enumerate() {
            if let Some(path) = path {
                app.open(slot, path);
            }
        }
        Ok(app)
    }

    fn open(&mut self, slot: usize, path: PathBuf) {
        let s = &mut self.slots[slot];
        s.path = path.display().to_string();
        s.face = None;
        s.error = None;
        s.busy = true;
        self.send(Request::Open { slot, path });
    }

    fn send(&mut self, request: Request) {
        let slot = match &request {
            Request::Open { slot, .. } | Request::Choose { slot, .. } => *slot,
        };
        // Requests queue up while the models compile; the worker serves them in order. It is
        // gone only after the models failed to open, an error already shown.
        if self.requests.send(request).is_ok() {
            self.pending += 1;
        } else {
            self.slots[slot].busy = false;
        }
    }

    fn receive(&mut self, ctx: &egui::Context) {
        while let Ok(reply) = self.replies.try_recv() {
            match reply {
                Reply::Ready(engine) => {
                    self.clock.engine_ready = Some(self.clock.now());
                    self.engine = Ok(Some(engine));
                }
                Reply::Failed(e) => {
                    self.engine = Err(e);
                    self.pending = 0;
                    self.slots.iter_mut().for_each(|s| s.busy = false);
                }
                Reply::Image { slot, label, image } => {
                    let s = &mut self.slots[slot];
                    match image {
                        Ok(img) => {
                            let size = [img.width() as usize, img.height() as usize];
                            let pixels = ColorImage::from_rgb(size, img.as_raw());
                            let name = format!("photo {slot}: {label}");
                            let texture = ctx.load_texture(name, pixels, TextureOptions::LINEAR);
                            s.texture = Some((texture, size));
                        }
                        Err(e) => {
                            s.texture = None;
                            s.error = Some(e);
                            s.busy = false;
                        }
                    }
                }
                Reply::Face { slot, face, ms } => {
                    let s = &mut self.slots[slot];
                    s.busy = false;
                    s.ms = Some(ms);
                    match face {
                        Ok(f) => (s.face, s.error) = (Some(f), None),
                        Err(e) => (s.face, s.error) = (None, Some(e)),
                    }
                }
                Reply::Verdict(v) => {
                    self.verdict = v;
                    self.pending = self.pending.saturating_sub(1);
                }
            }
        }
    }

    /// Nothing more will change without the user: the engine failed, or it is ready and has
    /// answered every request.
    fn settled(&self) -> bool {
        match &self.engine {
            Err(_) => true,
            Ok(Some(_)) => self.pending == 0,
            Ok(None) => false,
        }
    }

    /// Everything that went wrong, in words.
    fn errors(&self) -> Vec<String> {
        let engine = self.engine.as_ref().err().cloned();
        let slots = self
            .slots
            .iter()
            .zip(["A", "B"])
            .filter_map(|(s, name)| s.error.as_ref().map(|e| format!("photo {name}: {e}")));
        engine.into_iter().chain(slots).collect()
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.receive(ctx);
        // Files dropped on the window: onto the panel under the pointer, else A then B.
        let (dropped, pointer) =
            ctx.input(|i| (i.raw.dropped_files.clone(), i.pointer.hover_pos()));
        let under = pointer.and_then(|p| self.slot_rects.iter().position(|r| r.contains(p)));
        for (k, file) in dropped.iter().enumerate() {
            let slot = (k + under.unwrap_or(0)).min(1);
            self.open(slot, file.path().to_path_buf());
        }
        self.screenshot(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let now = self.clock.now();
        if self.clock.first_ui.is_none() {
            self.clock.first_ui = Some(now);
            // Ask for a second frame at once: its start times the first one's painting.
            ui.ctx().request_repaint();
        } else if self.clock.second_ui.is_none() {
            self.clock.second_ui = Some(now);
        }
        self.draw(ui);
    }
}

impl App {
    fn draw(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("EfQuantFace");
                ui.label(format!("engine and UI on {}", self.adapter));
            });
            match &self.engine {
                Ok(None) => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("compiling the detector and the recognizer…");
                    });
                }
                Ok(Some(e)) => {
                    ui.label(format!(
                        "model {} ({}-d), ready in {:.0} ms",
                        e.model, e.dim, e.ms
                    ));
                }
                Err(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
            }
        });
        let engine = self.engine.as_ref().ok().and_then(|e| e.as_ref());
        egui::Panel::bottom("verdict").show(ui, |ui| {
            ui.add_space(4.0);
            panels::verdict(ui, self.verdict.as_ref(), engine);
            ui.add_space(4.0);
        });
        let faces = [self.slots[0].face.as_ref(), self.slots[1].face.as_ref()];
        egui::Panel::right("gallery")
            // Its fields shrink to fit: give the names and scores room.
            .min_size(330.0)
            .show(ui, |ui| self.gallery.show(ui, faces, engine));
        let mut actions = Vec::new();
        egui::CentralPanel::default().show(ui, |ui| {
            let photo_height = ui.available_height() - 110.0;
            ui.columns(2, |cols| {
                for (slot, (ui, name)) in cols.iter_mut().zip(["A", "B"]).enumerate() {
                    self.slot_rects[slot] = ui.max_rect();
                    let s = &mut self.slots[slot];
                    if let Some(a) = panels::photo(ui, name, s, photo_height) {
                        actions.push((slot, a));
                    }
                }
            });
        });
        for (slot, action) in actions {
            match action {
                Action::Open(path) => self.open(slot, path),
                Action::Choose(index) => {
                    self.slots[slot].busy = true;
                    self.send(Request::Choose { slot, index });
                }
            }
        }
    }
}
