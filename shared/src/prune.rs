//! Structured channel pruning of a float graph, DepGraph-style: the channels that must go
//! together are found from the graph itself, each group of coupled channels is scored, and the
//! lowest-scoring ones are removed, leaving a smaller valid graph that every backend, the
//! quantizer and the ONNX exporter take unchanged.
//!
//! **Channel spaces.** A value's channels are tied to another's when an op maps channel `c` to
//! channel `c`: a residual `Add` (both inputs and the output), BatchNorm as [`Op::Affine`],
//! PReLU, ReLU, upsampling, a depthwise convolution (one filter per channel), and `Flatten`,
//! which hands channel `c` on as the features `c·H·W … (c+1)·H·W − 1`. The values tied together
//! form one *space*; removing channel `c` of a space removes it from every value in it, the
//! output rows of the layers that produce it (a dense convolution, a Gemm), the input columns
//! of the layers that consume it, and the per-channel parameters inside it (BatchNorm, PReLU
//! slopes, depthwise filters). A grouped convolution that is not depthwise ties channels in
//! groups; its spaces are kept whole, as are the image's and the embedding's.
//!
//! **Scores.** A channel's score is the L2 norm of every parameter of its group (DepGraph's
//! default); the trainer can supply first-order Taylor scores instead ([`select`] takes any).
//! **Sparsity** is per space by default: each prunable space loses the same fraction, because
//! norms of different layers are not on one scale (a global ranking of raw norms empties thin
//! layers first); [`Scope::Global`] ranks all channels together after dividing each space's
//! scores by their mean, and keeps at least a tenth of every space.

use crate::Error;
use crate::graph::{Graph, Op, SampleShape, Tensor, ValueId, Weights};

/// How the fraction of channels to remove is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each prunable space loses the same fraction of its channels.
    #[default]
    PerSpace,
    /// All channels ranked together (scores normalised per space); every space keeps ≥ 10 %.
    Global,
}

/// One set of coupled channels.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    /// Channels in the space.
    pub channels: usize,
    /// Values in the space and their multiplicity (features per channel: 1 for a feature map,
    /// `H·W` after a flatten).
    pub values: Vec<(ValueId, usize)>,
    /// Why the space cannot be pruned, if it cannot.
    pub pinned: Option<String>,
    /// Names of the nodes whose parameters the space's channels index (for reports).
    pub nodes: Vec<String>,
}

/// The channel spaces of a float graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Spaces {
    pub spaces: Vec<Space>,
    /// Space of every value.
    pub of_value: Vec<usize>,
    /// Multiplicity of every value (see [`Space::values`]).
    pub mult: Vec<usize>,
    shapes: Vec<SampleShape>,
}

fn find(parent: &mut [usize], mut v: usize) -> usize {
    while parent[v] != v {
        parent[v] = parent[parent[v]];
        v = parent[v];
    }
    v
}

fn tie(a: ValueId, b: ValueId, parent: &mut [usize]) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    parent[ra] = rb;
}

fn is_depthwise(w: &[usize], c_in: usize, group: usize) -> bool {
    group > 1 && group == c_in && w[0] == c_in && w[1] == 1
}

/// Finds the channel spaces of `graph` (float only: prune the teacher, then quantize).
pub fn spaces(graph: &Graph) -> Result<Spaces, Error> {
    if graph.is_quantized() {
        return Err(Error::Graph(
            "the graph is quantized: prune the float teacher, then quantize the result".into(),
        ));
    }
    let shapes = graph.infer_shapes()?;
    let n = graph.num_values;
    let mut parent: Vec<usize> = (0..n).collect();
    let mut mult = vec![1usize; n];
    let mut pins: Vec<(ValueId, String)> = vec![
        (0, "the input image".into()),
        (graph.output, "the embedding".into()),
    ];
    let node_err = |name: &str, msg: String| Error::Graph(format!("node '{name}': {msg}"));
    for node in &graph.nodes {
        let (x, y) = (node.inputs[0], node.output);
        match &node.op {
            Op::Conv { weights, attrs, .. } => {
                let w = weights.shape();
                if attrs.group == 1 {
                    continue;
                }
                if is_depthwise(w, shapes[x][0], attrs.group) {
                    tie(x, y, &mut parent);
                } else {
                    let why = |side: &str| {
                        format!(
                            "the {side} of grouped convolution '{}', whose channels go in groups",
                            node.name
                        )
                    };
                    pins.push((x, why("input")));
                    pins.push((y, why("output")));
                }
            }
            Op::Gemm { .. } => {}
            Op::Affine { .. } | Op::PRelu { .. } | Op::Relu | Op::Upsample { .. } => {
                mult[y] = mult[x];
                tie(x, y, &mut parent);
            }
            Op::Add => {
                let b = node.inputs[1];
                if shapes[x] != shapes[b] || mult[x] != mult[b] {
                    return Err(node_err(
                        &node.name,
                        format!(
                            "adds values of shapes {:?} and {:?}: their channels cannot be paired",
                            shapes[x], shapes[b]
                        ),
                    ));
                }
                mult[y] = mult[x];
                tie(x, y, &mut parent);
                tie(b, y, &mut parent);
            }
            Op::Flatten => {
                let hw: usize = shapes[x].iter().skip(1).product();
                mult[y] = mult[x] * hw;
                tie(x, y, &mut parent);
            }
        }
    }
    let mut index = vec![usize::MAX; n];
    let mut out: Vec<Space> = Vec::new();
    let mut of_value = vec![0; n];
    for v in 0..n {
        let r = find(&mut parent, v);
        if index[r] == usize::MAX {
            index[r] = out.len();
            out.push(Space {
                channels: shapes[v][0] / mult[v],
                values: Vec::new(),
                pinned: None,
                nodes: Vec::new(),
            });
        }
        let s = &mut out[index[r]];
        if shapes[v][0] % mult[v] != 0 || shapes[v][0] / mult[v] != s.channels {
            return Err(Error::Graph(format!(
                "value {v} has {} features, not {} channels × {}: the graph's channels cannot be \
                 traced",
                shapes[v][0], s.channels, mult[v]
            )));
        }
        s.values.push((v, mult[v]));
        of_value[v] = index[r];
    }
    for (v, why) in pins {
        let s = &mut out[of_value[v]];
        s.pinned.get_or_insert(why);
    }
    for node in &graph.nodes {
        let mut touch = |v: ValueId| {
            let s = &mut out[of_value[v]];
            if !s.nodes.contains(&node.name) {
                s.nodes.push(node.name.clone());
            }
        };
        match &node.op {
            Op::Conv { .. } | Op::Gemm { .. } => {
                touch(node.inputs[0]);
                touch(node.output);
            }
            Op::Affine { .. } | Op::PRelu { .. } => touch(node.output),
            _ => {}
        }
    }
    Ok(Spaces {
        spaces: out,
        of_value,
        mult,
        shapes,
    })
}

/// Which rows (output) and columns (input) of a node's parameters belong to a space's channel:
/// calls `f(space, channel, value)` for every parameter value of `graph`.
fn for_each_parameter(graph: &Graph, sp: &Spaces, mut f: impl FnMut(usize, usize, f32)) {
    for node in &graph.nodes {
        let (x, y) = (node.inputs[0], node.output);
        let (sx, sy) = (sp.of_value[x], sp.of_value[y]);
        let (mx, my) = (sp.mult[x], sp.mult[y]);
        match &node.op {
            Op::Conv {
                weights: Weights::Float(w),
                bias,
                attrs,
                ..
            } => {
                let per = w.numel() / w.shape[0].max(1);
                let k = w.shape[2] * w.shape[3];
                let depthwise = is_depthwise(&w.shape, sp.shapes[x][0], attrs.group);
                for (oc, (row, b)) in w.data.chunks(per).zip(bias).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        if attrs.group == 1 {
                            f(sy, oc, v);
                            f(sx, j / k, v);
                        } else if depthwise {
                            f(sy, oc, v);
                        }
                    }
                    if attrs.group == 1 || depthwise {
                        f(sy, oc, *b);
                    }
                }
            }
            Op::Gemm {
                weights: Weights::Float(w),
                bias,
                ..
            } => {
                for (r, (row, b)) in w.data.chunks(w.shape[1]).zip(bias).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        f(sy, r / my, v);
                        f(sx, i / mx, v);
                    }
                    f(sy, r / my, *b);
                }
            }
            Op::Affine { scale, shift } => {
                for (i, (a, b)) in scale.iter().zip(shift).enumerate() {
                    f(sy, i / my, *a);
                    f(sy, i / my, *b);
                }
            }
            Op::PRelu { slope } if slope.len() > 1 => {
                for (i, a) in slope.iter().enumerate() {
                    f(sy, i / my, *a);
                }
            }
            _ => {}
        }
    }
}

/// DepGraph's default score: per space, the L2 norm of all parameters of each channel's group.
pub fn l2_scores(graph: &Graph, sp: &Spaces) -> Vec<Vec<f32>> {
    let mut sq: Vec<Vec<f64>> = sp.spaces.iter().map(|s| vec![0.0; s.channels]).collect();
    for_each_parameter(graph, sp, |s, c, v| sq[s][c] += (v as f64) * (v as f64));
    sq.into_iter()
        .map(|s| s.into_iter().map(|x| x.sqrt() as f32).collect())
        .collect()
}

/// First-order Taylor scores (DepGraph's `TaylorImportance` on parameters): per space, the sum
/// over each channel's group of |w · ∂L/∂w|. `products` is the graph with every parameter
/// replaced by that product (same structure as the graph `sp` was traced from); the trainer
/// computes the gradients on a few calibration batches.
pub fn taylor_scores(products: &Graph, sp: &Spaces) -> Vec<Vec<f32>> {
    let mut sum: Vec<Vec<f64>> = sp.spaces.iter().map(|s| vec![0.0; s.channels]).collect();
    for_each_parameter(products, sp, |s, c, v| sum[s][c] += (v as f64).abs());
    sum.into_iter()
        .map(|s| s.into_iter().map(|x| x as f32).collect())
        .collect()
}

/// The channels kept in each space: all of a pinned space; otherwise the highest-scoring ones
/// after removing `sparsity` of them as `scope` says (ties keep the lower index), in order.
pub fn select(
    sp: &Spaces,
    scores: &[Vec<f32>],
    sparsity: f32,
    scope: Scope,
) -> Result<Vec<Vec<usize>>, Error> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(Error::Graph(format!(
            "sparsity {sparsity} must lie in [0, 1)"
        )));
    }
    if scores.len() != sp.spaces.len()
        || scores
            .iter()
            .zip(&sp.spaces)
            .any(|(s, space)| s.len() != space.channels)
    {
        return Err(Error::Graph(
            "one score per channel of every space is needed".into(),
        ));
    }
    let prunable = |s: &Space| s.pinned.is_none() && s.channels > 1;
    let mut removed: Vec<Vec<usize>> = vec![Vec::new(); sp.spaces.len()];
    let by_score = |s: &[f32]| {
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)));
        idx
    };
    match scope {
        Scope::PerSpace => {
            for (i, space) in sp.spaces.iter().enumerate() {
                if !prunable(space) {
                    continue;
                }
                let k =
                    ((space.channels as f32 * sparsity).round() as usize).min(space.channels - 1);
                removed[i] = by_score(&scores[i])[..k].to_vec();
            }
        }
        Scope::Global => {
            let mut all: Vec<(f32, usize, usize)> = Vec::new();
            let mut total = 0usize;
            for (i, space) in sp.spaces.iter().enumerate() {
                if !prunable(space) {
                    continue;
                }
                let mean = scores[i].iter().sum::<f32>() / space.channels as f32;
                let mean = if mean > 0.0 { mean } else { 1.0 };
                all.extend(scores[i].iter().enumerate().map(|(c, s)| (s / mean, i, c)));
                total += space.channels;
            }
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut k = (total as f32 * sparsity).round() as usize;
            for (_, i, c) in all {
                if k == 0 {
                    break;
                }
                let floor = sp.spaces[i].channels.div_ceil(10).max(1);
                if sp.spaces[i].channels - removed[i].len() > floor {
                    removed[i].push(c);
                    k -= 1;
                }
            }
        }
    }
    Ok(sp
        .spaces
        .iter()
        .zip(removed)
        .map(|(s, r)| (0..s.channels).filter(|c| !r.contains(c)).collect())
        .collect())
}

/// Indices of `v`'s features kept: each kept channel's `mult` features.
fn kept_features(sp: &Spaces, kept: &[Vec<usize>], v: ValueId) -> Vec<usize> {
    let m = sp.mult[v];
    kept[sp.of_value[v]]
        .iter()
        .flat_map(|&c| c * m..(c + 1) * m)
        .collect()
}

fn take(v: &[f32], idx: &[usize]) -> Vec<f32> {
    idx.iter().map(|&i| v[i]).collect()
}

/// `graph` with only the `kept` channels of each space (from [`select`]).
pub fn apply(graph: &Graph, sp: &Spaces, kept: &[Vec<usize>]) -> Result<Graph, Error> {
    let mut g = graph.clone();
    for node in &mut g.nodes {
        let (x, y) = (node.inputs[0], node.output);
        let rows = kept_features(sp, kept, y);
        let cols = kept_features(sp, kept, x);
        match &mut node.op {
            Op::Conv {
                weights: Weights::Float(w),
                bias,
                attrs,
                ..
            } => {
                let [_, ig, kh, kw] = w.shape[..] else {
                    unreachable!()
                };
                let depthwise = is_depthwise(&w.shape, sp.shapes[x][0], attrs.group);
                let k = kh * kw;
                let per = ig * k;
                let mut data = Vec::new();
                if attrs.group == 1 {
                    for &o in &rows {
                        for &i in &cols {
                            data.extend_from_slice(&w.data[o * per + i * k..][..k]);
                        }
                    }
                    *w = Tensor::new(vec![rows.len(), cols.len(), kh, kw], data)?;
                    *bias = take(bias, &rows);
                } else if depthwise {
                    for &o in &rows {
                        data.extend_from_slice(&w.data[o * per..][..per]);
                    }
                    *w = Tensor::new(vec![rows.len(), 1, kh, kw], data)?;
                    *bias = take(bias, &rows);
                    attrs.group = rows.len();
                }
            }
            Op::Gemm {
                weights: Weights::Float(w),
                bias,
                ..
            } => {
                let fin = w.shape[1];
                let mut data = Vec::with_capacity(rows.len() * cols.len());
                for &r in &rows {
                    data.extend(cols.iter().map(|&i| w.data[r * fin + i]));
                }
                *w = Tensor::new(vec![rows.len(), cols.len()], data)?;
                *bias = take(bias, &rows);
            }
            Op::Affine { scale, shift } => {
                *scale = take(scale, &rows);
                *shift = take(shift, &rows);
            }
            Op::PRelu { slope } if slope.len() > 1 => *slope = take(slope, &rows),
            _ => {}
        }
    }
    g.infer_shapes()?;
    Ok(g)
}

/// Prunes `sparsity` of the channels of every prunable space by L2 score.
pub fn prune(graph: &Graph, sparsity: f32, scope: Scope) -> Result<Graph, Error> {
    let sp = spaces(graph)?;
    let kept = select(&sp, &l2_scores(graph, &sp), sparsity, scope)?;
    apply(graph, &sp, &kept)
}
