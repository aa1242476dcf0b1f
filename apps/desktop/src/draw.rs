//! Painting a photo with its faces: the image scaled to fit, every detection boxed with its
//! five landmarks, the chosen one highlighted, and clicks on a box turned into a choice.

use efq_engine::face::{Detection, Face};
use egui::{
    Align2, Color32, CursorIcon, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, TextureHandle,
    Vec2, pos2, vec2,
};

/// The face the pipeline uses.
pub const CHOSEN: Color32 = Color32::from_rgb(60, 220, 90);
/// Faces found but not used.
const OTHER: Color32 = Color32::from_rgb(250, 200, 40);
/// Left eye, right eye, nose, left and right mouth corners: told apart at a glance.
const LANDMARKS: [Color32; 5] = [
    Color32::from_rgb(255, 80, 80),
    Color32::from_rgb(80, 160, 255),
    Color32::from_rgb(255, 255, 255),
    Color32::from_rgb(255, 120, 220),
    Color32::from_rgb(120, 255, 255),
];

/// Paints `texture` (a photo of `size` pixels) into at most `max` points, with the faces of
/// `face` on top. Returns the index of a face box the user clicked, other than the chosen one.
pub fn photo(
    ui: &mut egui::Ui,
    texture: &TextureHandle,
    size: [usize; 2],
    face: Option<&Face>,
    max: Vec2,
) -> Option<usize> {
    let [w, h] = size.map(|s| s as f32);
    // Scale up small photos too (LFW's are 250×250): the boxes are what the user inspects.
    let scale = (max.x / w).min(max.y / h).max(0.05);
    let (rect, response) = ui.allocate_exact_size(vec2(w * scale, h * scale), Sense::click());
    let painter = ui.painter_at(rect);
    let uv = Rect::from_min_max(Pos2::ZERO, pos2(1.0, 1.0));
    painter.image(texture.id(), rect, uv, Color32::WHITE);

    let face = face?;
    let to_screen = |x: f32, y: f32| rect.min + vec2(x, y) * scale;
    let boxes: Vec<Rect> = face
        .faces
        .faces
        .iter()
        .map(|d| {
            Rect::from_min_max(
                to_screen(d.bbox[0], d.bbox[1]),
                to_screen(d.bbox[2], d.bbox[3]),
            )
        })
        .collect();
    // The chosen face last, so that its box is drawn over overlapping ones.
    let order = (0..boxes.len())
        .filter(|&i| i != face.chosen)
        .chain([face.chosen]);
    for i in order {
        let chosen = i == face.chosen;
        let d: &Detection = &face.faces.faces[i];
        let (color, width) = if chosen { (CHOSEN, 3.0) } else { (OTHER, 1.5) };
        painter.rect_stroke(
            boxes[i],
            2.0,
            Stroke::new(width, color),
            StrokeKind::Outside,
        );
        for (k, p) in d.kps.iter().enumerate() {
            painter.circle_filled(to_screen(p[0], p[1]), 2.5 + scale.min(2.0), LANDMARKS[k]);
        }
        let label = format!("#{i} {:.2}", d.score);
        let at = boxes[i].left_top() - vec2(0.0, 2.0);
        let galley = painter.layout_no_wrap(label, FontId::proportional(13.0), color);
        let text_rect = Align2::LEFT_BOTTOM.anchor_size(at, galley.size());
        // A dark backing makes the label readable on any photo.
        painter.rect_filled(text_rect.expand(1.0), 2.0, Color32::from_black_alpha(170));
        painter.galley(text_rect.min, galley, color);
    }

    let hit = |p: Pos2| {
        // Nested boxes: the smallest one under the pointer is the one meant.
        (0..boxes.len())
            .filter(|&i| boxes[i].contains(p))
            .min_by(|&i, &j| boxes[i].area().total_cmp(&boxes[j].area()))
    };
    if let Some(i) = response.hover_pos().and_then(hit)
        && i != face.chosen
    {
        ui.ctx().set_cursor_icon(CursorIcon::PointingHand);
    }
    response
        .interact_pointer_pos()
        .filter(|_| response.clicked())
        .and_then(hit)
        .filter(|&i| i != face.chosen)
}
