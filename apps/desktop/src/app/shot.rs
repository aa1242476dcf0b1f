//! `--screenshot`: once every request is answered and the result painted, capture the
//! window through egui, save it, report the verdict as one JSON line and close. Errors go to
//! stderr and make the exit status non-zero.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::Context as _;
use egui::ColorImage;

use super::App;
use crate::panels::Slot;

/// A `--screenshot` run in progress.
pub(super) struct Shot {
    path: PathBuf,
    /// Frames painted since everything was settled.
    settled_frames: u32,
    requested: bool,
    tx: Sender<Arc<ColorImage>>,
    rx: Receiver<Arc<ColorImage>>,
}

impl Shot {
    /// A capture to be saved at `path`.
    pub(super) fn new(path: PathBuf) -> Shot {
        let (tx, rx) = channel();
        Shot {
            path,
            settled_frames: 0,
            requested: false,
            tx,
            rx,
        }
    }
}

impl App {
    /// `--screenshot`: once settled and painted, capture the window; when the pixels arrive,
    /// save them, report and close.
    pub(super) fn screenshot(&mut self, ctx: &egui::Context) {
        let settled = self.settled();
        let Some(shot) = &mut self.shot else { return };
        if let Ok(image) = shot.rx.try_recv() {
            let path = shot.path.clone();
            self.finish(ctx, &image, &path);
            return;
        }
        if shot.requested || !settled {
            return;
        }
        // One full frame with the final state painted before the capture is asked for.
        shot.settled_frames += 1;
        if shot.settled_frames >= 2 {
            shot.requested = true;
            let (tx, wake) = (shot.tx.clone(), ctx.clone());
            ctx.request_screenshot(move |image| {
                let _ = tx.send(image);
                wake.request_repaint();
            });
        }
        ctx.request_repaint();
    }

    fn finish(&mut self, ctx: &egui::Context, image: &ColorImage, path: &PathBuf) {
        let errors = self.errors();
        let saved = save_png(image, path);
        let mut failed = !errors.is_empty();
        for e in &errors {
            eprintln!("efq-desktop: {e}");
        }
        if let Err(e) = &saved {
            eprintln!("efq-desktop: cannot save {}: {e:#}", path.display());
            failed = true;
        }
        match (&self.verdict, failed) {
            (Some(v), false) => {
                let count = |s: &Slot| s.face.as_ref().map_or(0, |f| f.faces.faces.len());
                let line = serde_json::json!({
                    "similarity": v.similarity,
                    "same": v.same,
                    "a_faces": count(&self.slots[0]),
                    "b_faces": count(&self.slots[1]),
                    "adapter": self.adapter,
                });
                println!("{line}");
            }
            (None, false) => {
                eprintln!("efq-desktop: no verdict: --screenshot needs both --a and --b");
                failed = true;
            }
            (_, true) => {}
        }
        let engine_ms = self
            .engine
            .as_ref()
            .ok()
            .and_then(|e| e.as_ref())
            .map(|e| e.ms);
        let timings = serde_json::json!({ "timings_ms": {
            "window_and_device": self.clock.window,
            "first_ui": self.clock.first_ui,
            "second_ui": self.clock.second_ui,
            "engine_ready": self.clock.engine_ready,
            "engine_compile": engine_ms,
            "photo_a": self.slots[0].ms,
            "photo_b": self.slots[1].ms,
            "screenshot": self.clock.now(),
        }});
        eprintln!("{timings}");
        self.exit.store(i32::from(failed), Ordering::SeqCst);
        self.shot = None;
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
    }
}

/// Writes egui's screenshot (premultiplied RGBA, unmultiplied for the file) as a PNG.
fn save_png(image: &ColorImage, path: &PathBuf) -> anyhow::Result<()> {
    let [w, h] = image.size;
    let rgba: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|c| c.to_srgba_unmultiplied())
        .collect();
    let img = image::RgbaImage::from_raw(w as u32, h as u32, rgba).context("pixel count")?;
    img.save(path)?;
    Ok(())
}
