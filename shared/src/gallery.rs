//! 1:N search: a gallery of enrolled faces (a name and an L2-normalised embedding each) and
//! the identification of probes against it — the best matches by cosine, or "unknown" when
//! even the best is below the model's threshold.
//!
//! A gallery is saved as a safetensors file a user can open anywhere (`embeddings`: `F32
//! [N, dim]`; metadata `efquantface_gallery`: JSON with the names, the model and the
//! threshold). Scores for a batch of probes are one matrix product (`matrixmultiply`'s
//! sgemm, the CPU backend's), then a partial selection of the top k per probe.
//!
//! ```
//! use efq_shared::gallery::Gallery;
//! let mut g = Gallery::new(3, "demo", Some(0.3));
//! g.enroll("ada", &[1.0, 0.0, 0.0]).unwrap();
//! g.enroll("bob", &[0.0, 1.0, 0.0]).unwrap();
//! let m = g.identify(&[0.9, 0.1, 0.0], 1).unwrap();
//! assert_eq!(m.best().unwrap().name, "ada");
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::Error;

const META_KEY: &str = "efquantface_gallery";
/// Up to this many probes are scored by dot products, more by blocked sgemm.
const FEW_PROBES: usize = 4;
/// Faces per block of work (2,048 × 512 floats: 4 MB).
const BLOCK: usize = 2048;
/// Enrolled faces a gallery may hold (4 GiB of 512-d f32 embeddings).
pub const MAX_FACES: usize = 1 << 21;

/// Enrolled faces and how their embeddings were made.
#[derive(Clone, Debug, PartialEq)]
pub struct Gallery {
    pub dim: usize,
    /// The model that embedded the faces (probes must come from the same one).
    pub model: String,
    /// The model's cosine threshold: a best match below it is "unknown".
    pub threshold: Option<f32>,
    names: Vec<String>,
    /// `names.len() × dim`, each row L2-normalised.
    embeddings: Vec<f32>,
}

/// One enrolled face matched to a probe.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Match {
    pub name: String,
    /// Row of the face in the gallery.
    pub index: usize,
    pub cosine: f32,
}

/// The answer for one probe: the top matches, best first, and the decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identification {
    pub matches: Vec<Match>,
    /// The best match's name when it reaches the threshold; `None`: unknown (or no threshold
    /// to decide with, see `decided`).
    pub identity: Option<String>,
    /// Whether a threshold was there to decide with.
    pub decided: bool,
}

impl Identification {
    pub fn best(&self) -> Option<&Match> {
        self.matches.first()
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    model: String,
    threshold: Option<f32>,
    names: Vec<String>,
}

fn normalised(e: &[f32]) -> Result<Vec<f32>, Error> {
    let n = e.iter().map(|v| v * v).sum::<f32>().sqrt();
    if !(n.is_finite() && n > 0.0) {
        return Err(Error::Input(format!(
            "embedding has norm {n}: not a face embedding"
        )));
    }
    Ok(e.iter().map(|v| v / n).collect())
}

/// The little-endian bytes of `v`: on a little-endian machine the floats' own memory (no copy of
/// a gallery that may be hundreds of MB), elsewhere converted.
fn le_bytes(v: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: any f32 is 4 initialised bytes; u8 has alignment 1; the slice borrows `v`.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
        })
    }
    #[cfg(not(target_endian = "little"))]
    {
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// A dot product with eight independent sums, which the compiler keeps in vector registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl Gallery {
    pub fn new(dim: usize, model: impl Into<String>, threshold: Option<f32>) -> Gallery {
        Gallery {
            dim,
            model: model.into(),
            threshold,
            names: Vec::new(),
            embeddings: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Adds a face (its embedding is normalised here). A person may be enrolled several times.
    pub fn enroll(&mut self, name: &str, embedding: &[f32]) -> Result<usize, Error> {
        if embedding.len() != self.dim {
            return Err(Error::Input(format!(
                "embedding of {} values for a gallery of {}-d faces",
                embedding.len(),
                self.dim
            )));
        }
        if self.len() >= MAX_FACES {
            return Err(Error::Input(format!(
                "a gallery holds at most {MAX_FACES} faces"
            )));
        }
        self.embeddings.extend(normalised(embedding)?);
        self.names.push(name.to_string());
        Ok(self.names.len() - 1)
    }

    /// The `k` best matches of one probe.
    pub fn identify(&self, probe: &[f32], k: usize) -> Result<Identification, Error> {
        Ok(self.identify_batch(probe, 1, k)?.remove(0))
    }

    /// The `k` best matches of each of `n` probes (`probes`: `n × dim`), all scored by one
    /// matrix product.
    pub fn identify_batch(
        &self,
        probes: &[f32],
        n: usize,
        k: usize,
    ) -> Result<Vec<Identification>, Error> {
        let q = self.normalised_probes(probes, n)?;
        let scores = self.scores(&q, n);
        self.identify_from_scores(&scores, n, k)
    }

    /// The rows, `len × dim`, each L2-normalised: what another scorer (the engine's GPU
    /// search) multiplies probes with.
    pub fn embeddings(&self) -> &[f32] {
        &self.embeddings
    }

    /// `n` probes (`n × dim` values) checked and L2-normalised, as [`Gallery::identify_batch`]
    /// scores them.
    pub fn normalised_probes(&self, probes: &[f32], n: usize) -> Result<Vec<f32>, Error> {
        if probes.len() != n * self.dim {
            return Err(Error::Input(format!(
                "{} values for {n} probes of {} dimensions",
                probes.len(),
                self.dim
            )));
        }
        Ok(probes
            .chunks(self.dim.max(1))
            .map(normalised)
            .collect::<Result<Vec<_>, _>>()?
            .concat())
    }

    /// The top `k` and the decision for each of `n` probes from their cosines against every
    /// face (`scores`: `n × len`, probe-major), however they were computed: the one selection
    /// [`Gallery::identify_batch`] uses, so another scorer ranks and decides exactly as it does.
    pub fn identify_from_scores(
        &self,
        scores: &[f32],
        n: usize,
        k: usize,
    ) -> Result<Vec<Identification>, Error> {
        let m = self.len();
        if scores.len() != n * m {
            return Err(Error::Input(format!(
                "{} scores for {n} probes against {m} faces",
                scores.len()
            )));
        }
        // Per probe rather than per chunk of `m` scores: with no faces there are no chunks, yet
        // each probe still gets its (empty, unknown) answer.
        Ok((0..n)
            .into_par_iter()
            .map(|p| self.decide(&scores[p * m..(p + 1) * m], k))
            .collect())
    }

    /// `n × len` cosines. A few probes: one dot product per face, the gallery streamed once
    /// across the threads. Many: per block of faces, one sgemm of all probes against the block
    /// (blocks small enough that the packed block stays in cache), blocks across the threads.
    fn scores(&self, q: &[f32], n: usize) -> Vec<f32> {
        let (m, d) = (self.len(), self.dim);
        if m == 0 || n == 0 {
            return vec![0f32; n * m];
        }
        if n <= FEW_PROBES {
            let mut out = vec![0f32; n * m];
            for (p, row) in q.chunks(d).zip(out.chunks_mut(m)) {
                row.par_chunks_mut(BLOCK)
                    .zip(self.embeddings.par_chunks(BLOCK * d))
                    .for_each(|(o, faces)| {
                        for (v, f) in o.iter_mut().zip(faces.chunks(d)) {
                            *v = dot(p, f);
                        }
                    });
            }
            return out;
        }
        let blocks: Vec<Vec<f32>> = self
            .embeddings
            .par_chunks(BLOCK * d)
            .map(|faces| {
                let r = faces.len() / d;
                let mut o = vec![0f32; n * r];
                // SAFETY: q is n×d, faces r×d (read transposed), o is n×r.
                unsafe {
                    matrixmultiply::sgemm(
                        n,
                        d,
                        r,
                        1.0,
                        q.as_ptr(),
                        d as isize,
                        1,
                        faces.as_ptr(),
                        1,
                        d as isize,
                        0.0,
                        o.as_mut_ptr(),
                        r as isize,
                        1,
                    );
                }
                o
            })
            .collect();
        let mut out = vec![0f32; n * m];
        for (b, block) in blocks.iter().enumerate() {
            let r = block.len() / n;
            for p in 0..n {
                out[p * m + b * BLOCK..][..r].copy_from_slice(&block[p * r..][..r]);
            }
        }
        out
    }

    fn decide(&self, row: &[f32], k: usize) -> Identification {
        // One pass keeping the k best, best first (ties: the earlier face).
        let k = k.max(1).min(row.len());
        let mut top: Vec<usize> = Vec::with_capacity(k + 1);
        for (i, &v) in row.iter().enumerate() {
            if top.len() == k && v <= row[top[k - 1]] {
                continue;
            }
            let at = top.partition_point(|&j| row[j] >= v);
            top.insert(at, i);
            top.truncate(k);
        }
        let matches: Vec<Match> = top
            .into_iter()
            .map(|i| Match {
                name: self.names[i].clone(),
                index: i,
                cosine: row[i],
            })
            .collect();
        let identity = match (self.threshold, matches.first()) {
            (Some(t), Some(b)) if b.cosine >= t => Some(b.name.clone()),
            _ => None,
        };
        Identification {
            matches,
            identity,
            decided: self.threshold.is_some(),
        }
    }

    /// The gallery as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let bytes = le_bytes(&self.embeddings);
        let view = TensorView::new(Dtype::F32, vec![self.len(), self.dim], &bytes)
            .map_err(|e| Error::Format(format!("gallery: {e}")))?;
        let meta = Meta {
            model: self.model.clone(),
            threshold: self.threshold,
            names: self.names.clone(),
        };
        let mut m = std::collections::HashMap::new();
        m.insert(
            META_KEY.to_string(),
            serde_json::to_string(&meta).map_err(|e| Error::Format(e.to_string()))?,
        );
        safetensors::serialize([("embeddings", view)], Some(m))
            .map_err(|e| Error::Format(format!("gallery: {e}")))
    }

    /// Reads a gallery written by [`Gallery::to_bytes`], checking what a stranger's file could
    /// get wrong (names against rows, norms, shape).
    pub fn from_bytes(bytes: &[u8]) -> Result<Gallery, Error> {
        let bad = |m: String| Error::Format(format!("gallery: {m}"));
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let meta: Meta = header
            .metadata()
            .as_ref()
            .and_then(|m: &std::collections::HashMap<String, String>| m.get(META_KEY))
            .ok_or_else(|| bad(format!("no '{META_KEY}' metadata: not a gallery")))
            .and_then(|s| serde_json::from_str(s).map_err(|e| bad(format!("metadata: {e}"))))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let t = st
            .tensor("embeddings")
            .map_err(|_| bad("no 'embeddings' tensor".into()))?;
        let [n, dim] = t.shape()[..] else {
            return Err(bad(format!(
                "embeddings of shape {:?}, not [N, dim]",
                t.shape()
            )));
        };
        if t.dtype() != Dtype::F32 || n != meta.names.len() || n > MAX_FACES || dim == 0 {
            return Err(bad(format!(
                "{n} embeddings of {:?} for {} names",
                t.dtype(),
                meta.names.len()
            )));
        }
        let mut g = Gallery::new(dim, meta.model, meta.threshold);
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        // Stored rows are already normalised: kept bit for bit, checked rather than rescaled.
        for (name, e) in meta.names.iter().zip(values.chunks(dim)) {
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            if !(norm.is_finite() && (norm - 1.0).abs() < 1e-3) {
                return Err(bad(format!("face '{name}' has norm {norm}, not 1")));
            }
        }
        g.names = meta.names;
        g.embeddings = values;
        Ok(g)
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        crate::format::write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Gallery, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Gallery::from_bytes(&bytes).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Faces per name, for a summary.
    pub fn people(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for n in &self.names {
            *m.entry(n.as_str()).or_insert(0) += 1;
        }
        m
    }
}
