//! Readers for benchmark pair lists and the IJB-C 1:1 template protocol.
//!
//! * LFW `pairs.txt`: header `folds pairs_per_class`, then per fold
//!   `pairs_per_class` matched lines `Name i j` followed by as many
//!   mismatched lines `Name1 i Name2 j`; images are `Name/Name_%04d.jpg`.
//! * SLLFW `pair_SLLFW.txt`: the same lines, with or without the header.
//! * CALFW / CPLFW `pairs_CALFW.txt` / `pairs_CPLFW.txt`: one `image label`
//!   per line, two consecutive lines per pair; both labels are the same
//!   non-zero identity for a matched pair and both 0 for a mismatched one.
//! * IJB-C (InsightFace `eval_ijbc` layout): `ijbc_face_tid_mid.txt` lines
//!   `image template_id media_id`, `ijbc_template_pair_label.txt` lines
//!   `template1 template2 label`.
//!
//! Fields may be separated by any whitespace; blank lines are ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::EvalError;
use super::metrics::{TarAtFar, l2_normalize, tar_at_far};

const LFW: &str = "LFW pairs.txt";
const SLLFW: &str = "SLLFW pair list";
const XLFW: &str = "CALFW/CPLFW pair list";
const IJBC_FACES: &str = "IJB-C face_tid_mid";
const IJBC_PAIRS: &str = "IJB-C template_pair_label";

/// One verification pair of image paths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    /// First image, relative to the dataset's image folder unless a prefix
    /// was given.
    pub a: PathBuf,
    /// Second image.
    pub b: PathBuf,
    /// Whether both images show the same person.
    pub same: bool,
}

/// Parses LFW's `pairs.txt` (View 2), header included.
///
/// Besides the line format, the pair count must equal
/// `2 * folds * pairs_per_class` and each fold must list its matched pairs
/// before its mismatched ones, because the 10-fold protocol relies on that
/// layout. Paths are relative: `Name/Name_0001.jpg`.
pub fn parse_lfw_pairs(text: &str) -> Result<Vec<Pair>, EvalError> {
    let mut lines = numbered_lines(text);
    let Some((line, header)) = lines.next() else {
        return Err(EvalError::Structure {
            format: LFW,
            reason: "empty file: expected header `folds pairs_per_class`".into(),
        });
    };
    let Some(header) = parse_header(&header) else {
        return Err(EvalError::Parse {
            format: LFW,
            line,
            reason: format!(
                "expected header `folds pairs_per_class` (e.g. `10\t300`), found `{}`",
                header.join(" ")
            ),
        });
    };
    parse_lfw_body(LFW, lines, Some((line, header)))
}

/// Parses SLLFW's `pair_SLLFW.txt`: LFW pair lines, with or without LFW's
/// `folds pairs_per_class` header. With a header, the same layout checks as
/// [`parse_lfw_pairs`] apply.
pub fn parse_sllfw_pairs(text: &str) -> Result<Vec<Pair>, EvalError> {
    let mut lines = numbered_lines(text).peekable();
    let header = match lines.peek() {
        Some((line, fields)) => parse_header(fields).map(|h| (*line, h)),
        None => None,
    };
    if header.is_some() {
        lines.next();
    }
    parse_lfw_body(SLLFW, lines, header)
}

/// Parses `pairs_CALFW.txt` / `pairs_CPLFW.txt`.
///
/// Each line is `image_name label`; consecutive lines form a pair. A pair is
/// matched when both labels are the same non-zero identity and mismatched
/// when both are 0; anything else is an error naming the second line. Image
/// paths are `image_dir_prefix/image_name`, or `image_name` alone without a
/// prefix.
pub fn parse_xlfw_pairs(
    text: &str,
    image_dir_prefix: Option<&Path>,
) -> Result<Vec<Pair>, EvalError> {
    let image_path = |name: &str| match image_dir_prefix {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    };
    let mut entries = Vec::new();
    for (line, fields) in numbered_lines(text) {
        let [name, label] = fields.as_slice() else {
            return Err(EvalError::Parse {
                format: XLFW,
                line,
                reason: format!("expected `image_name label`, found {} fields", fields.len()),
            });
        };
        let label: u32 = parse_number(XLFW, line, label, "label")?;
        entries.push((line, *name, label));
    }
    if entries.len() % 2 != 0 {
        let (line, name, _) = entries[entries.len() - 1];
        return Err(EvalError::Structure {
            format: XLFW,
            reason: format!(
                "odd number of image lines ({}): `{name}` on line {line} has no partner",
                entries.len()
            ),
        });
    }
    entries
        .chunks_exact(2)
        .map(|pair| {
            let (_, name_a, label_a) = pair[0];
            let (line, name_b, label_b) = pair[1];
            let same = match (label_a, label_b) {
                (0, 0) => false,
                (x, y) if x == y => true,
                _ => {
                    return Err(EvalError::Parse {
                        format: XLFW,
                        line,
                        reason: format!(
                            "labels {label_a} and {label_b} are neither one non-zero identity \
                             (matched pair) nor both 0 (mismatched pair)"
                        ),
                    });
                }
            };
            Ok(Pair {
                a: image_path(name_a),
                b: image_path(name_b),
                same,
            })
        })
        .collect()
}

/// Reads and parses an LFW `pairs.txt` file ([`parse_lfw_pairs`]).
pub fn read_lfw_pairs(path: &Path) -> Result<Vec<Pair>, EvalError> {
    parse_lfw_pairs(&read_text(path)?)
}

/// Reads and parses an SLLFW pair file ([`parse_sllfw_pairs`]).
pub fn read_sllfw_pairs(path: &Path) -> Result<Vec<Pair>, EvalError> {
    parse_sllfw_pairs(&read_text(path)?)
}

/// Reads and parses a CALFW/CPLFW pair file ([`parse_xlfw_pairs`]).
pub fn read_xlfw_pairs(
    path: &Path,
    image_dir_prefix: Option<&Path>,
) -> Result<Vec<Pair>, EvalError> {
    parse_xlfw_pairs(&read_text(path)?, image_dir_prefix)
}

/// One face crop of the IJB-C 1:1 protocol.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IjbcFace {
    /// Image file name, e.g. `1.jpg`.
    pub image: String,
    /// Template the face belongs to.
    pub template_id: u32,
    /// Media (photo or video) the face was cropped from.
    pub media_id: u32,
}

/// One template comparison of the IJB-C 1:1 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IjbcTemplatePair {
    /// First template.
    pub template1: u32,
    /// Second template.
    pub template2: u32,
    /// Whether both templates show the same subject (label 1).
    pub genuine: bool,
}

/// The IJB-C 1:1 verification protocol.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IjbcProtocol {
    /// Faces in the order of `ijbc_face_tid_mid.txt`, which is the order the
    /// face embeddings must be given in.
    pub faces: Vec<IjbcFace>,
    /// Template pairs in the order of `ijbc_template_pair_label.txt`.
    pub pairs: Vec<IjbcTemplatePair>,
}

impl IjbcProtocol {
    /// Parses the contents of `ijbc_face_tid_mid.txt` and
    /// `ijbc_template_pair_label.txt`.
    pub fn parse(face_tid_mid: &str, template_pair_label: &str) -> Result<Self, EvalError> {
        let mut faces = Vec::new();
        for (line, fields) in numbered_lines(face_tid_mid) {
            let [image, tid, mid] = fields.as_slice() else {
                return Err(EvalError::Parse {
                    format: IJBC_FACES,
                    line,
                    reason: format!(
                        "expected `image_name template_id media_id`, found {} fields",
                        fields.len()
                    ),
                });
            };
            faces.push(IjbcFace {
                image: (*image).to_owned(),
                template_id: parse_number(IJBC_FACES, line, tid, "template id")?,
                media_id: parse_number(IJBC_FACES, line, mid, "media id")?,
            });
        }
        let mut pairs = Vec::new();
        for (line, fields) in numbered_lines(template_pair_label) {
            let [t1, t2, label] = fields.as_slice() else {
                return Err(EvalError::Parse {
                    format: IJBC_PAIRS,
                    line,
                    reason: format!(
                        "expected `template1 template2 label`, found {} fields",
                        fields.len()
                    ),
                });
            };
            let genuine = match *label {
                "1" => true,
                "0" => false,
                other => {
                    return Err(EvalError::Parse {
                        format: IJBC_PAIRS,
                        line,
                        reason: format!("label `{other}` is neither 0 nor 1"),
                    });
                }
            };
            pairs.push(IjbcTemplatePair {
                template1: parse_number(IJBC_PAIRS, line, t1, "template id")?,
                template2: parse_number(IJBC_PAIRS, line, t2, "template id")?,
                genuine,
            });
        }
        Ok(Self { faces, pairs })
    }

    /// Reads and parses the two protocol files.
    pub fn read(face_tid_mid: &Path, template_pair_label: &Path) -> Result<Self, EvalError> {
        Self::parse(&read_text(face_tid_mid)?, &read_text(template_pair_label)?)
    }
}

/// Template features as InsightFace's `image2template_feature` computes
/// them.
///
/// `face_embeddings` is a row-major `faces.len() × dim` matrix, one row per
/// face of `protocol.faces` in order; any flip-sum, normalisation or
/// detector-score weighting is the caller's to apply beforehand. Within a
/// template, faces of the same media are averaged first (so a video's many
/// frames weigh as much as one photo), the media means are summed, and the
/// sum is L2-normalised. Accumulation is in `f64`.
pub fn ijbc_template_features(
    face_embeddings: &[f32],
    dim: usize,
    protocol: &IjbcProtocol,
) -> Result<HashMap<u32, Vec<f32>>, EvalError> {
    if dim == 0 || face_embeddings.len() != protocol.faces.len() * dim {
        return Err(EvalError::InvalidInput(format!(
            "{} embedding values do not form {} faces of dimension {dim}",
            face_embeddings.len(),
            protocol.faces.len()
        )));
    }
    // Media are visited in ascending id, like np.unique, so that the f64 sum
    // runs in a reproducible order.
    let mut templates: BTreeMap<u32, BTreeMap<u32, (Vec<f64>, usize)>> = BTreeMap::new();
    for (face, row) in protocol.faces.iter().zip(face_embeddings.chunks_exact(dim)) {
        let (sum, count) = templates
            .entry(face.template_id)
            .or_default()
            .entry(face.media_id)
            .or_insert_with(|| (vec![0.0; dim], 0));
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += f64::from(x);
        }
        *count += 1;
    }
    Ok(templates
        .into_iter()
        .map(|(tid, media)| {
            let mut pooled = vec![0.0f64; dim];
            for (sum, count) in media.values() {
                for (p, s) in pooled.iter_mut().zip(sum) {
                    *p += s / *count as f64;
                }
            }
            let mut feature: Vec<f32> = pooled.iter().map(|&x| x as f32).collect();
            l2_normalize(&mut feature);
            (tid, feature)
        })
        .collect())
}

/// Cosine score of every protocol pair, in protocol order, as
/// `(score, genuine)`.
///
/// `templates` are unit vectors from [`ijbc_template_features`], so the
/// cosine is their dot product.
pub fn ijbc_scores(
    protocol: &IjbcProtocol,
    templates: &HashMap<u32, Vec<f32>>,
) -> Result<Vec<(f32, bool)>, EvalError> {
    let lookup = |tid: u32| {
        templates.get(&tid).ok_or_else(|| EvalError::Structure {
            format: IJBC_PAIRS,
            reason: format!("template {tid} has no face in the face list"),
        })
    };
    protocol
        .pairs
        .iter()
        .map(|p| {
            let (a, b) = (lookup(p.template1)?, lookup(p.template2)?);
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            Ok((dot as f32, p.genuine))
        })
        .collect()
}

/// TAR at each of `fars` over IJB-C pair scores from [`ijbc_scores`]
/// (see [`tar_at_far`] for the definition).
pub fn ijbc_tar_at_far(scores: &[(f32, bool)], fars: &[f64]) -> Result<Vec<TarAtFar>, EvalError> {
    let (genuine, impostor): (Vec<_>, Vec<_>) = scores.iter().partition(|(_, g)| *g);
    let genuine: Vec<f32> = genuine.into_iter().map(|(s, _)| s).collect();
    let impostor: Vec<f32> = impostor.into_iter().map(|(s, _)| s).collect();
    tar_at_far(&genuine, &impostor, fars)
}

fn read_text(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Non-blank lines with their 1-based line numbers, split on whitespace
/// (which also drops the `\r` of CRLF files).
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, fields)| !fields.is_empty())
}

/// `folds pairs_per_class`, both positive, or `None` if the line is not a
/// header.
fn parse_header(fields: &[&str]) -> Option<(usize, usize)> {
    match fields {
        [folds, per_class] => {
            let folds = folds.parse().ok().filter(|&f| f > 0)?;
            let per_class = per_class.parse().ok().filter(|&p| p > 0)?;
            Some((folds, per_class))
        }
        _ => None,
    }
}

fn parse_number<T: std::str::FromStr>(
    format: &'static str,
    line: usize,
    field: &str,
    what: &str,
) -> Result<T, EvalError> {
    field.parse().map_err(|_| EvalError::Parse {
        format,
        line,
        reason: format!("{what} `{field}` is not a non-negative integer"),
    })
}

fn lfw_image(
    format: &'static str,
    line: usize,
    name: &str,
    number: &str,
) -> Result<PathBuf, EvalError> {
    let n: u32 = parse_number(format, line, number, "image number")?;
    if n == 0 {
        return Err(EvalError::Parse {
            format,
            line,
            reason: "image numbers start at 1".into(),
        });
    }
    Ok(PathBuf::from(format!("{name}/{name}_{n:04}.jpg")))
}

fn parse_lfw_body<'a>(
    format: &'static str,
    lines: impl Iterator<Item = (usize, Vec<&'a str>)>,
    header: Option<(usize, (usize, usize))>,
) -> Result<Vec<Pair>, EvalError> {
    let mut pairs = Vec::new();
    for (line, fields) in lines {
        let pair = match fields.as_slice() {
            [name, i, j] => Pair {
                a: lfw_image(format, line, name, i)?,
                b: lfw_image(format, line, name, j)?,
                same: true,
            },
            [name1, i, name2, j] => {
                if name1 == name2 {
                    return Err(EvalError::Parse {
                        format,
                        line,
                        reason: format!("mismatched pair names `{name1}` on both sides"),
                    });
                }
                Pair {
                    a: lfw_image(format, line, name1, i)?,
                    b: lfw_image(format, line, name2, j)?,
                    same: false,
                }
            }
            _ => {
                return Err(EvalError::Parse {
                    format,
                    line,
                    reason: format!(
                        "expected `Name i j` or `Name1 i Name2 j`, found {} fields",
                        fields.len()
                    ),
                });
            }
        };
        if let Some((_, (_, per_class))) = header {
            // Within each fold the first `per_class` pairs are matched.
            let matched_slot = pairs.len() % (2 * per_class) < per_class;
            if pair.same != matched_slot {
                let fold = pairs.len() / (2 * per_class) + 1;
                let (want, got) = if matched_slot {
                    ("matched", "mismatched")
                } else {
                    ("mismatched", "matched")
                };
                return Err(EvalError::Parse {
                    format,
                    line,
                    reason: format!("fold {fold} expects a {want} pair here, found a {got} one"),
                });
            }
        }
        pairs.push(pair);
    }
    if let Some((line, (folds, per_class))) = header {
        let expected = 2 * folds * per_class;
        if pairs.len() != expected {
            return Err(EvalError::Structure {
                format,
                reason: format!(
                    "header on line {line} announces {folds} folds of {per_class} matched + \
                     {per_class} mismatched pairs ({expected}), but the file has {}",
                    pairs.len()
                ),
            });
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/eval")
            .join(name)
    }

    fn pair(a: &str, b: &str, same: bool) -> Pair {
        Pair {
            a: a.into(),
            b: b.into(),
            same,
        }
    }

    #[test]
    fn lfw_fixture_reads_two_folds_in_file_order() {
        let pairs = read_lfw_pairs(&fixture("pairs.txt")).unwrap();
        assert_eq!(pairs.len(), 8);
        assert_eq!(
            pairs[0],
            pair(
                "Abel_Pacheco/Abel_Pacheco_0001.jpg",
                "Abel_Pacheco/Abel_Pacheco_0004.jpg",
                true
            )
        );
        assert_eq!(
            pairs[2],
            pair(
                "AJ_Cook/AJ_Cook_0001.jpg",
                "Marsha_Thomason/Marsha_Thomason_0002.jpg",
                false
            )
        );
        let labels: Vec<bool> = pairs.iter().map(|p| p.same).collect();
        assert_eq!(labels, [true, true, false, false, true, true, false, false]);
    }

    #[test]
    fn lfw_accepts_spaces_crlf_and_blank_lines() {
        let text = "1 1\r\nA 1 2\r\n\r\nB 3 C 12\r\n";
        let pairs = parse_lfw_pairs(text).unwrap();
        assert_eq!(
            pairs,
            [
                pair("A/A_0001.jpg", "A/A_0002.jpg", true),
                pair("B/B_0003.jpg", "C/C_0012.jpg", false),
            ]
        );
    }

    fn parse_error_line(r: Result<Vec<Pair>, EvalError>) -> usize {
        match r {
            Err(EvalError::Parse { line, .. }) => line,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn lfw_errors_name_the_offending_line() {
        assert_eq!(parse_error_line(parse_lfw_pairs("A 1 2\n")), 1);
        assert_eq!(parse_error_line(parse_lfw_pairs("1\t1\nA 1\nB 1 C 2\n")), 2);
        assert_eq!(
            parse_error_line(parse_lfw_pairs("1\t1\nA 1 2\nB x C 2\n")),
            3
        );
        assert_eq!(
            parse_error_line(parse_lfw_pairs("1\t1\nA 0 2\nB 1 C 2\n")),
            2
        );
        assert_eq!(
            parse_error_line(parse_lfw_pairs("1\t1\nA 1 2\nB 1 B 2\n")),
            3
        );
    }

    #[test]
    fn lfw_rejects_pairs_out_of_fold_order() {
        // Fold 1 of 1×1 must be matched then mismatched.
        let err = parse_lfw_pairs("1\t1\nB 1 C 2\nA 1 2\n").unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("fold 1 expects a matched pair"));
    }

    #[test]
    fn lfw_rejects_pair_count_that_contradicts_header() {
        let err = parse_lfw_pairs("2\t1\nA 1 2\nB 1 C 2\n").unwrap_err();
        assert!(matches!(err, EvalError::Structure { .. }), "{err}");
        assert!(err.to_string().contains("(4)"), "{err}");
    }

    #[test]
    fn sllfw_fixture_without_header_reads_every_line() {
        let pairs = read_sllfw_pairs(&fixture("pair_SLLFW.txt")).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            pairs[3],
            pair(
                "Colin_Powell/Colin_Powell_0007.jpg",
                "Donald_Rumsfeld/Donald_Rumsfeld_0120.jpg",
                false
            )
        );
        assert_eq!(
            pairs.iter().filter(|p| p.same).count(),
            2,
            "two matched lines in the fixture"
        );
    }

    #[test]
    fn sllfw_with_header_is_checked_like_lfw() {
        let with = parse_sllfw_pairs("1\t1\nA 1 2\nB 1 C 2\n").unwrap();
        let without = parse_sllfw_pairs("A 1 2\nB 1 C 2\n").unwrap();
        assert_eq!(with, without);
        assert!(parse_sllfw_pairs("1\t2\nA 1 2\nB 1 C 2\n").is_err());
    }

    #[test]
    fn calfw_fixture_pairs_consecutive_lines_with_prefix() {
        let prefix = Path::new("calfw/aligned images");
        let pairs = read_xlfw_pairs(&fixture("pairs_CALFW.txt"), Some(prefix)).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            pairs[0],
            pair(
                "calfw/aligned images/Abel_Pacheco_0001.jpg",
                "calfw/aligned images/Abel_Pacheco_0003.jpg",
                true
            )
        );
        let labels: Vec<bool> = pairs.iter().map(|p| p.same).collect();
        assert_eq!(labels, [true, true, false, false]);
    }

    #[test]
    fn cplfw_fixture_without_prefix_keeps_bare_names() {
        let pairs = read_xlfw_pairs(&fixture("pairs_CPLFW.txt"), None).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[3], pair("Aaron_Peirsol_2.jpg", "Zico_3.jpg", false));
        assert_eq!(pairs.iter().filter(|p| p.same).count(), 2);
    }

    #[test]
    fn xlfw_rejects_inconsistent_labels_and_odd_line_count() {
        let err = parse_xlfw_pairs("a.jpg 5\nb.jpg 7\n", None).unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 2, .. }), "{err}");
        let err = parse_xlfw_pairs("a.jpg 5\nb.jpg 0\n", None).unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 2, .. }), "{err}");
        let err = parse_xlfw_pairs("a.jpg 5\nb.jpg 5\nc.jpg 0\n", None).unwrap_err();
        assert!(matches!(err, EvalError::Structure { .. }), "{err}");
        let err = parse_xlfw_pairs("a.jpg\n", None).unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn missing_file_reports_its_path() {
        let err = read_lfw_pairs(Path::new("/nonexistent/pairs.txt")).unwrap_err();
        assert!(matches!(err, EvalError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/pairs.txt"));
    }

    fn ijbc_fixture() -> IjbcProtocol {
        IjbcProtocol::read(
            &fixture("ijbc_face_tid_mid.txt"),
            &fixture("ijbc_template_pair_label.txt"),
        )
        .unwrap()
    }

    /// Embeddings of the six fixture faces, in file order.
    const IJBC_EMB: [f32; 12] = [
        1.0, 0.0, // 1.jpg  template 1, media 10
        0.0, 1.0, // 2.jpg  template 1, media 10
        1.0, 0.0, // 3.jpg  template 1, media 11
        0.0, 2.0, // 4.jpg  template 2, media 30
        3.0, 4.0, // 5.jpg  template 3, media 20
        3.0, 4.0, // 6.jpg  template 3, media 20
    ];

    #[test]
    fn ijbc_fixture_parses_faces_and_labels() {
        let p = ijbc_fixture();
        assert_eq!(p.faces.len(), 6);
        assert_eq!(
            p.faces[4],
            IjbcFace {
                image: "5.jpg".into(),
                template_id: 3,
                media_id: 20
            }
        );
        assert_eq!(
            p.pairs,
            [
                IjbcTemplatePair {
                    template1: 1,
                    template2: 2,
                    genuine: true
                },
                IjbcTemplatePair {
                    template1: 1,
                    template2: 3,
                    genuine: false
                },
                IjbcTemplatePair {
                    template1: 2,
                    template2: 3,
                    genuine: false
                },
            ]
        );
    }

    /// Template 1: media 10 averages (1,0) and (0,1) to (0.5,0.5); media 11
    /// is (1,0); the sum (1.5,0.5) normalised is (3,1)/sqrt(10) =
    /// (0.9486833, 0.3162278). Plain face averaging would give (2,1)/sqrt(5)
    /// instead. Template 2 is (0,1); template 3 is (0.6,0.8).
    #[test]
    fn ijbc_template_features_pool_media_before_templates() {
        let t = ijbc_template_features(&IJBC_EMB, 2, &ijbc_fixture()).unwrap();
        assert_eq!(t.len(), 3);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        let s10 = 10f32.sqrt();
        assert!(close(&t[&1], &[3.0 / s10, 1.0 / s10]), "{:?}", t[&1]);
        assert!(close(&t[&2], &[0.0, 1.0]), "{:?}", t[&2]);
        assert!(close(&t[&3], &[0.6, 0.8]), "{:?}", t[&3]);
    }

    /// Scores: (1,2) = 1/sqrt(10) = 0.3162278; (1,3) = (1.8+0.8)/sqrt(10) =
    /// 0.8221922; (2,3) = 0.8. Impostors descending: 0.822, 0.8; FAR 0.5 →
    /// index 1 → 0.8, and the genuine 0.316 is below it: TAR 0. FAR 0 →
    /// 0.822: TAR 0 too.
    #[test]
    fn ijbc_scores_are_cosines_of_template_features() {
        let p = ijbc_fixture();
        let t = ijbc_template_features(&IJBC_EMB, 2, &p).unwrap();
        let scores = ijbc_scores(&p, &t).unwrap();
        let want = [(0.3162278f32, true), (0.8221922, false), (0.8, false)];
        for ((s, g), (ws, wg)) in scores.iter().zip(want) {
            assert!((s - ws).abs() < 1e-6, "{s} vs {ws}");
            assert_eq!(*g, wg);
        }
        let tar = ijbc_tar_at_far(&scores, &[0.5, 0.0]).unwrap();
        assert!((tar[0].threshold - 0.8).abs() < 1e-6);
        assert!((tar[1].threshold - 0.8221922).abs() < 1e-6);
        assert_eq!(tar[0].tar, 0.0);
        assert_eq!(tar[1].tar, 0.0);
    }

    #[test]
    fn ijbc_rejects_wrong_embedding_count_and_unknown_templates() {
        let p = ijbc_fixture();
        assert!(ijbc_template_features(&IJBC_EMB[..10], 2, &p).is_err());
        let t = ijbc_template_features(&IJBC_EMB, 2, &p).unwrap();
        let mut q = p.clone();
        q.pairs[0].template2 = 99;
        let err = ijbc_scores(&q, &t).unwrap_err();
        assert!(err.to_string().contains("template 99"), "{err}");
    }

    #[test]
    fn ijbc_parse_errors_name_the_line() {
        let err = IjbcProtocol::parse("1.jpg 1 10\n2.jpg 1\n", "").unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 2, .. }), "{err}");
        let err = IjbcProtocol::parse("1.jpg 1 10\n", "1 2 1\n1 3 2\n").unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 2, .. }), "{err}");
        let err = IjbcProtocol::parse("1.jpg x 10\n", "").unwrap_err();
        assert!(err.to_string().contains("template id `x`"), "{err}");
    }
}
