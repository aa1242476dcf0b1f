//! ROC curves as PNG: TAR against FAR on a log axis, where face-recognition models differ.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One curve: points of (FAR, TAR).
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        let bytes = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                format!(
                    "no TrueType font found (install fonts-dejavu-core); looked in {candidates:?}"
                )
            })?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| "font could not be parsed".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws the curves with FAR on a log scale from `far_min` to 1.
pub fn roc_png(path: &Path, title: &str, curves: &[Curve], far_min: f64) -> Result<()> {
    register_font()?;
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let lowest = curves
            .iter()
            .flat_map(|c| c.points.iter().filter(|p| p.0 >= far_min).map(|p| p.1))
            .fold(1.0f64, f64::min);
        let y_min = ((lowest * 100.0).floor() / 100.0 - 0.01).max(0.0);
        // The x axis ends where the data does (all-pairs curves stop at FAR 1e-2).
        let far_max = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .fold(far_min * 10.0, f64::max)
            .min(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((far_min..far_max).log_scale(), y_min..1.0)?;
        chart
            .configure_mesh()
            .x_desc("false accept rate (log)")
            .y_desc("true accept rate")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{:.1}%", v * 100.0))
            .draw()?;
        for (i, c) in curves.iter().enumerate() {
            let color = Palette99::pick(i).stroke_width(2);
            let pts: Vec<(f64, f64)> = c
                .points
                .iter()
                .copied()
                .filter(|p| p.0 >= far_min && p.0 <= 1.0)
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color))?
                .label(c.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 20, y)],
                        Palette99::pick(i).stroke_width(2),
                    )
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()?;
        root.present()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
