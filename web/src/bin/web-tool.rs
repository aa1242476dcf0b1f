//! Native helper for the web build and tests (does nothing on wasm):
//!
//! ```text
//! web-tool threshold --model M.efq --report report.json [--far 0.001]
//!     stores the flip-test all-pairs threshold at --far from a `trainer eval` report in the
//!     model (the page embeds each face with its mirror image, as `trainer verify` does)
//! web-tool has-threshold --model M.efq
//!     exits 0 when the model stores a threshold, 1 when not
//! web-tool fixture --model M.efq --lfw DIR --out DIR [--n 4] [--detector scrfd.onnx]
//!     writes the browser test fixture: the model, the first n LFW test crops as RGB bytes and
//!     their embeddings from the native CPU backend; with --detector also the detector, one
//!     raw LFW photo (photo.rgb, 250×250) and the faces the native CPU backend finds in it
//! web-tool decode --photo P.jpg --out P.png
//!     writes a photo's pixels as the native decoder reads them, losslessly: the end-to-end test
//!     hands the page these, so that it and `trainer verify` start from the same pixels (JPEG
//!     decoders differ by a grey level here and there, enough to change a borderline face)
//! ```

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    native::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result, bail};
    use efq_shared::format::{PackedModel, Threshold};
    use efq_shared::{cpu, preprocess};

    fn flags(args: &[String]) -> Result<HashMap<String, String>> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                bail!("unexpected argument {k}");
            };
            let v = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            m.insert(name.to_string(), v.clone());
        }
        Ok(m)
    }

    fn need<'a>(f: &'a HashMap<String, String>, k: &str) -> Result<&'a String> {
        f.get(k).with_context(|| format!("--{k} is required"))
    }

    pub fn main() -> Result<()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let Some((cmd, rest)) = args.split_first() else {
            bail!("usage: web-tool threshold|fixture --flag value … (see the source's header)");
        };
        let f = flags(rest)?;
        match cmd.as_str() {
            "threshold" => threshold(
                Path::new(need(&f, "model")?),
                Path::new(need(&f, "report")?),
                f.get("far").map(|s| s.parse()).transpose()?.unwrap_or(1e-3),
            ),
            "has-threshold" => {
                let m = PackedModel::load(Path::new(need(&f, "model")?))?;
                std::process::exit(if m.manifest.threshold.is_some() { 0 } else { 1 })
            }
            "fixture" => fixture(
                Path::new(need(&f, "model")?),
                Path::new(need(&f, "lfw")?),
                Path::new(need(&f, "out")?),
                f.get("n").map(|s| s.parse()).transpose()?.unwrap_or(4),
            )
            .and_then(|_| match f.get("detector") {
                Some(d) => detector_fixture(
                    Path::new(d),
                    Path::new(need(&f, "lfw")?),
                    Path::new(need(&f, "out")?),
                ),
                None => Ok(()),
            }),
            "decode" => {
                let photo = need(&f, "photo")?;
                let img = image::open(photo).with_context(|| format!("decoding {photo}"))?;
                let out = need(&f, "out")?;
                img.to_rgb8()
                    .save(out)
                    .with_context(|| format!("writing {out}"))
            }
            other => bail!("unknown command {other}: threshold, has-threshold, fixture or decode"),
        }
    }

    fn threshold(model: &Path, report: &Path, far: f64) -> Result<()> {
        let mut m = PackedModel::load(model)?;
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(report).with_context(|| format!("reading {}", report.display()))?,
        )?;
        let t = r["flip"]["all_pairs"]["tar_at_far"]
            .as_array()
            .context("report has no flip.all_pairs.tar_at_far")?
            .iter()
            .find(|t| t["far"].as_f64() == Some(far))
            .with_context(|| format!("report has no threshold at FAR {far}"))?;
        let cosine = t["threshold"]
            .as_f64()
            .context("threshold is not a number")? as f32;
        let images = r["images"].as_u64().unwrap_or(0);
        let crops = r["crops"].as_str().unwrap_or("?");
        m.manifest.threshold = Some(Threshold {
            far,
            cosine,
            source: format!("LFW all pairs of {images} images of {crops}, flip"),
        });
        m.save(model)?;
        println!(
            "{}: threshold {cosine:.4} at FAR {far:e} ({images} images)",
            model.display()
        );
        Ok(())
    }

    fn fixture(model: &Path, lfw: &Path, out: &Path, n: usize) -> Result<()> {
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        let m = PackedModel::from_bytes(&bytes)?;
        let root = lfw.join("insightface112");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
            .with_context(|| format!("reading {}", root.display()))?
            .map(|d| Ok(std::fs::read_dir(d?.path())?))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .map(|e| Ok(e?.path()))
            .collect::<Result<_>>()?;
        files.sort();
        if files.len() < n {
            bail!("only {} crops in {}", files.len(), root.display());
        }
        let [_, h, w] = m.manifest.input_shape;
        let mut rgb = Vec::new();
        let mut x = Vec::new();
        for f in &files[..n] {
            let img = image::open(f)
                .with_context(|| format!("decoding {}", f.display()))?
                .to_rgb8();
            if (img.width() as usize, img.height() as usize) != (w, h) {
                bail!("{} is not {w}×{h}", f.display());
            }
            x.extend(preprocess::pixels_to_chw(
                img.as_raw(),
                w,
                h,
                &m.manifest.preprocessing,
            ));
            rgb.extend(img.into_raw());
        }
        let raw = cpu::forward(&m.graph, &x, n)?;
        let mut emb = raw.clone();
        cpu::l2_normalize_rows(&mut emb, m.manifest.embedding_dim);
        std::fs::create_dir_all(out)?;
        let le = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        std::fs::write(out.join("model.efq"), &bytes)?;
        std::fs::write(out.join("images.rgb"), &rgb)?;
        std::fs::write(out.join("raw.f32"), le(&raw))?;
        std::fs::write(out.join("embeddings.f32"), le(&emb))?;
        let names: Vec<String> = files[..n].iter().map(|f| f.display().to_string()).collect();
        std::fs::write(
            out.join("fixture.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model.display().to_string(),
                "name": m.manifest.name,
                "n": n,
                "images": names,
                "embedding_dim": m.manifest.embedding_dim,
            }))?,
        )?;
        println!(
            "wrote the browser fixture for {n} images to {}",
            out.display()
        );
        Ok(())
    }

    /// The raw photo the browser detector test runs on (one face, 250×250).
    const PHOTO: &str = "raw250-sample/Silvio_Berlusconi/Silvio_Berlusconi_0001.jpg";

    fn detector_fixture(detector: &Path, lfw: &Path, out: &Path) -> Result<()> {
        let bytes =
            std::fs::read(detector).with_context(|| format!("reading {}", detector.display()))?;
        let photo = lfw.join(PHOTO);
        let img = image::open(&photo)
            .with_context(|| format!("decoding {}", photo.display()))?
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let det = pollster::block_on(efq_web::FaceDetector::load_native(&bytes, "cpu"))
            .map_err(anyhow::Error::msg)?;
        let report = pollster::block_on(det.detect_native(img.as_raw(), w, h, 3))
            .map_err(anyhow::Error::msg)?;
        let chosen = report.chosen.context("the fixture photo has no face")?;
        let kps: Vec<f32> = report.faces[chosen].kps.iter().flatten().copied().collect();
        let crop =
            efq_web::align_native(img.as_raw(), w, h, 3, &kps).map_err(anyhow::Error::msg)?;
        std::fs::write(out.join("detector.onnx"), &bytes)?;
        std::fs::write(out.join("photo.rgb"), img.as_raw())?;
        std::fs::write(out.join("crop.rgba"), &crop)?;
        std::fs::write(
            out.join("faces.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "photo": PHOTO, "width": w, "height": h, "report": report,
            }))?,
        )?;
        println!(
            "wrote the detector fixture ({} faces in {PHOTO}) to {}",
            report.faces.len(),
            out.display()
        );
        Ok(())
    }
}
