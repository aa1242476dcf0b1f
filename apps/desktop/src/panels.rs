//! The photo panels (A and B) and the verdict: what each shows and which user actions they
//! turn into requests for the engine.

use std::path::PathBuf;

use efq_engine::face::Face;
use egui::{Color32, RichText, TextureHandle, Vec2};

use crate::draw;
use crate::worker::{Engine, Verdict};

/// Everything the window knows about one photo slot.
#[derive(Default)]
pub struct Slot {
    /// The path field's text.
    pub path: String,
    /// The photo shown and its size in pixels.
    pub texture: Option<(TextureHandle, [usize; 2])>,
    /// Its faces and the chosen one, once the pipeline has run.
    pub face: Option<Face>,
    /// Why there is no face (unreadable file, no face found …), in words.
    pub error: Option<String>,
    /// A request for this slot is with the engine.
    pub busy: bool,
    /// Wall time of the last pipeline run on it, in milliseconds.
    pub ms: Option<f64>,
}

/// What the user did in a photo panel.
pub enum Action {
    /// Open this file.
    Open(PathBuf),
    /// Use this face instead.
    Choose(usize),
}

/// Shows slot `name` (`"A"` or `"B"`): path field, photo with faces, status. The photo takes
/// at most `photo_height` points of height.
pub fn photo(ui: &mut egui::Ui, name: &str, slot: &mut Slot, photo_height: f32) -> Option<Action> {
    let mut action = None;
    ui.horizontal(|ui| {
        ui.heading(format!("Photo {name}"));
        if slot.busy {
            ui.spinner();
        }
    });
    ui.horizontal(|ui| {
        let field = egui::TextEdit::singleline(&mut slot.path)
            .hint_text("path to a JPEG or PNG, or drop a file here")
            .desired_width(ui.available_width() - 60.0);
        let edited = ui.add(field);
        let enter = edited.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if (ui.button("Open").clicked() || enter) && !slot.path.trim().is_empty() {
            action = Some(Action::Open(PathBuf::from(slot.path.trim())));
        }
    });
    let max = Vec2::new(ui.available_width(), photo_height);
    match &slot.texture {
        Some((texture, size)) => {
            if let Some(i) = draw::photo(ui, texture, *size, slot.face.as_ref(), max) {
                action = Some(Action::Choose(i));
            }
        }
        None => {
            let (rect, _) = ui.allocate_exact_size(max, egui::Sense::hover());
            ui.painter()
                .rect_filled(rect, 6.0, ui.visuals().faint_bg_color);
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "drop a photo here",
                egui::FontId::proportional(18.0),
                ui.visuals().weak_text_color(),
            );
        }
    }
    if let Some(face) = &slot.face {
        let d = &face.faces.faces[face.chosen];
        let ms = slot
            .ms
            .map(|ms| format!(", {ms:.0} ms"))
            .unwrap_or_default();
        ui.label(format!(
            "{} face(s) at detector size {}; using #{} (score {:.2}){ms}",
            face.faces.faces.len(),
            face.faces.size,
            face.chosen,
            d.score
        ));
        if face.faces.faces.len() > 1 {
            ui.weak("click another box to compare that face");
        }
    }
    if let Some(e) = &slot.error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
    action
}

/// The decision on the two chosen faces.
pub fn verdict(ui: &mut egui::Ui, verdict: Option<&Verdict>, engine: Option<&Engine>) {
    let Some(v) = verdict else {
        ui.weak("the verdict appears once both photos have a face");
        return;
    };
    ui.horizontal(|ui| {
        let (text, color) = match v.same {
            Some(true) => ("same person", draw::CHOSEN),
            Some(false) => ("different people", Color32::from_rgb(240, 90, 80)),
            None => ("no threshold", ui.visuals().warn_fg_color),
        };
        ui.label(RichText::new(text).size(28.0).strong().color(color));
        ui.add_space(16.0);
        ui.vertical(|ui| {
            ui.label(RichText::new(format!("cosine {:.4}", v.similarity)).size(18.0));
            let source = engine.map_or("", |e| e.threshold_source.as_str());
            match v.threshold {
                Some(t) => ui.label(format!("threshold {t:.4} ({source})")),
                None => ui.label("the model stores no threshold: pass --threshold COS"),
            };
        });
    });
}
