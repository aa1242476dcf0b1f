//! The 1:N panel: enroll the chosen face of A or B under a name, identify the chosen face of
//! either photo against everyone enrolled, save and load the gallery as safetensors.
//! Scoring a probe is a few dot products on the CPU: it runs on the UI thread.

use efq_engine::face::Face;
use efq_shared::gallery::{Gallery, Identification};
use egui::RichText;

use crate::draw;
use crate::worker::Engine;

/// How many matches an identification lists.
const TOP_K: usize = 5;

/// The gallery and the panel's fields.
#[derive(Default)]
pub struct GalleryPanel {
    gallery: Option<Gallery>,
    name: String,
    path: String,
    /// The last identification and which photo it was for.
    answer: Option<(&'static str, Identification)>,
    /// The outcome of the last action, in words (`Err`: shown as an error).
    message: Option<Result<String, String>>,
}

impl GalleryPanel {
    /// Shows the panel; `faces` are the chosen faces of A and B.
    pub fn show(&mut self, ui: &mut egui::Ui, faces: [Option<&Face>; 2], engine: Option<&Engine>) {
        ui.heading("Gallery (1:N)");
        let Some(engine) = engine else {
            ui.weak("waiting for the engine");
            return;
        };
        ui.horizontal(|ui| {
            ui.label("name");
            let name = egui::TextEdit::singleline(&mut self.name).hint_text("who is this?");
            ui.add(name.desired_width(ui.available_width()));
        });
        ui.horizontal(|ui| {
            for (face, slot) in faces.iter().zip(["A", "B"]) {
                let ok = face.is_some() && !self.name.trim().is_empty();
                if ui
                    .add_enabled(ok, egui::Button::new(format!("Enroll {slot}")))
                    .clicked()
                    && let Some(face) = face
                {
                    self.enroll(engine, face, slot);
                }
            }
        });
        ui.horizontal(|ui| {
            for (face, slot) in faces.iter().zip(["A", "B"]) {
                let ok = face.is_some() && self.gallery.as_ref().is_some_and(|g| !g.is_empty());
                if ui
                    .add_enabled(ok, egui::Button::new(format!("Identify {slot}")))
                    .clicked()
                    && let (Some(face), Some(g)) = (face, &self.gallery)
                {
                    match g.identify(&face.embedding, TOP_K) {
                        Ok(id) => {
                            self.answer = Some((slot, id));
                            self.message = None;
                        }
                        Err(e) => {
                            self.answer = None;
                            self.message = Some(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        self.files(ui, engine);
        if let Some(m) = &self.message {
            match m {
                Ok(m) => ui.label(m),
                Err(e) => ui.colored_label(ui.visuals().error_fg_color, e),
            };
        }
        if let Some((slot, id)) = &self.answer {
            ui.separator();
            answer(
                ui,
                slot,
                id,
                self.gallery.as_ref().and_then(|g| g.threshold),
            );
        }
        if let Some(g) = &self.gallery {
            ui.separator();
            ui.label(format!(
                "{} face(s) of {} people:",
                g.len(),
                g.people().len()
            ));
            egui::ScrollArea::vertical()
                .max_height(140.0)
                .show(ui, |ui| {
                    for (name, n) in g.people() {
                        ui.label(format!("{name} ×{n}"));
                    }
                });
        }
    }

    fn enroll(&mut self, engine: &Engine, face: &Face, slot: &str) {
        let g = self
            .gallery
            .get_or_insert_with(|| Gallery::new(engine.dim, &engine.model, engine.threshold));
        let name = self.name.trim();
        self.message = Some(match g.enroll(name, &face.embedding) {
            Ok(row) => Ok(format!(
                "enrolled face #{} of {slot} as {name} (row {row})",
                face.chosen
            )),
            Err(e) => Err(e.to_string()),
        });
    }

    /// The path field with Save and Load.
    fn files(&mut self, ui: &mut egui::Ui, engine: &Engine) {
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.path)
                    .hint_text("gallery.safetensors")
                    .desired_width(ui.available_width() - 100.0),
            );
            let path = self.path.trim().to_string();
            let can_save = !path.is_empty() && self.gallery.is_some();
            if ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .clicked()
                && let Some(g) = &self.gallery
            {
                self.message = Some(match g.save(&path) {
                    Ok(()) => Ok(format!("saved {} face(s) to {path}", g.len())),
                    Err(e) => Err(format!("cannot save {path}: {e}")),
                });
            }
            if ui
                .add_enabled(!path.is_empty(), egui::Button::new("Load"))
                .clicked()
            {
                self.message = Some(self.load(&path, engine));
            }
        });
    }

    fn load(&mut self, path: &str, engine: &Engine) -> Result<String, String> {
        let g = Gallery::load(path).map_err(|e| format!("cannot load {path}: {e}"))?;
        // Embeddings of another width cannot be compared at all; another model's of the same
        // width can, but the scores mean nothing: refuse both.
        if g.dim != engine.dim || g.model != engine.model {
            return Err(format!(
                "{path} holds {}-d faces of {}; this window embeds {}-d faces with {}",
                g.dim, g.model, engine.dim, engine.model
            ));
        }
        let loaded = format!("loaded {} face(s) from {path}", g.len());
        self.gallery = Some(g);
        self.answer = None;
        Ok(loaded)
    }
}

/// An identification: the best matches with their cosines and the decision.
fn answer(ui: &mut egui::Ui, slot: &str, id: &Identification, threshold: Option<f32>) {
    let (text, color) = match (&id.identity, id.decided) {
        (Some(name), _) => (format!("{slot} is {name}"), draw::CHOSEN),
        (None, true) => (format!("{slot}: unknown"), ui.visuals().warn_fg_color),
        (None, false) => (
            format!("{slot}: no threshold to decide with"),
            ui.visuals().warn_fg_color,
        ),
    };
    ui.label(RichText::new(text).size(20.0).strong().color(color));
    if let Some(t) = threshold {
        ui.weak(format!("threshold {t:.3}: below it, unknown"));
    }
    for m in &id.matches {
        ui.monospace(format!("{:>7.4}  {}", m.cosine, m.name));
    }
}

#[cfg(test)]
mod tests {
    use efq_engine::face::{Detection, Faces};

    use super::*;

    fn engine(model: &str) -> Engine {
        Engine {
            model: model.into(),
            dim: 3,
            threshold: Some(0.3),
            threshold_source: "test".into(),
            ms: 0.0,
        }
    }

    fn face(embedding: [f32; 3]) -> Face {
        let d = Detection {
            bbox: [0.0, 0.0, 10.0, 10.0],
            score: 0.9,
            kps: [[1.0, 1.0]; 5],
        };
        Face {
            photo: "test".into(),
            faces: Faces {
                faces: vec![d],
                size: 640,
            },
            chosen: 0,
            crop: image::RgbImage::new(112, 112),
            embedding: embedding.to_vec(),
        }
    }

    #[test]
    fn enrolled_face_is_identified_a_stranger_is_unknown_and_the_gallery_round_trips() {
        let e = engine("m.onnx");
        let mut panel = GalleryPanel {
            name: "ada".into(),
            ..Default::default()
        };
        panel.enroll(&e, &face([1.0, 0.0, 0.0]), "A");
        let g = panel.gallery.as_ref().unwrap();
        let ada = g.identify(&[0.9, 0.1, 0.0], TOP_K).unwrap();
        assert_eq!(ada.identity.as_deref(), Some("ada"));
        let stranger = g.identify(&[0.0, 1.0, 0.0], TOP_K).unwrap();
        assert!(stranger.decided && stranger.identity.is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        panel.gallery.as_ref().unwrap().save(&path).unwrap();
        let path = path.to_str().unwrap();
        let mut loaded = GalleryPanel::default();
        assert!(loaded.load(path, &e).is_ok());
        assert_eq!(loaded.gallery.as_ref().unwrap().names(), ["ada"]);
        // Another model's faces are refused, not compared.
        let err = GalleryPanel::default().load(path, &engine("other.efq"));
        assert!(err.unwrap_err().contains("other.efq"));
    }
}
