//! Structured pruning: removing a channel group must compute exactly what the original network
//! computes once the removed channels' inputs to every consuming layer are zeroed (the
//! channels then reach nothing), on the naive oracle, for MobileFaceNet- and iresnet-shaped
//! graphs of random depth and weights, any selection of channels, both scopes.

use efq_shared::builders::{random_images, tiny_mobilefacenet};
use efq_shared::graph::{Graph, Op, Weights};
use efq_shared::prune::{self, Scope, Spaces};
use efq_shared::pth::generate::{iresnet_state_dict, mobilefacenet_state_dict};
use efq_shared::pth::{import_bytes, write_state_dict};
use efq_shared::reference::forward;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// arcface_torch networks at 16×16 input, imported from generated checkpoints.
fn arcface_graphs() -> Vec<Graph> {
    let sds = [
        iresnet_state_dict([2, 2, 2, 2], 1, 11),
        mobilefacenet_state_dict([1, 2, 1, 1], 1, 1, 12),
    ];
    sds.iter()
        .map(|sd| {
            let bytes = write_state_dict(sd, "g").unwrap();
            import_bytes(&bytes, "g").unwrap().graph
        })
        .collect()
}

fn graphs() -> Vec<Graph> {
    let mut g = vec![tiny_mobilefacenet(16, 24, 3).unwrap()];
    g.extend(arcface_graphs());
    g
}

/// `graph` with the input columns of removed channels zeroed in every consuming layer.
fn zero_removed_inputs(graph: &Graph, sp: &Spaces, kept: &[Vec<usize>]) -> Graph {
    let mut g = graph.clone();
    for node in &mut g.nodes {
        let x = node.inputs[0];
        let (space, m) = (sp.of_value[x], sp.mult[x]);
        let gone = |feature: usize| !kept[space].contains(&(feature / m));
        match &mut node.op {
            Op::Conv {
                weights: Weights::Float(w),
                attrs,
                ..
            } if attrs.group == 1 => {
                let (ig, k) = (w.shape[1], w.shape[2] * w.shape[3]);
                for (j, v) in w.data.iter_mut().enumerate() {
                    if gone((j / k) % ig) {
                        *v = 0.0;
                    }
                }
            }
            Op::Gemm {
                weights: Weights::Float(w),
                ..
            } => {
                let fin = w.shape[1];
                for (j, v) in w.data.iter_mut().enumerate() {
                    if gone(j % fin) {
                        *v = 0.0;
                    }
                }
            }
            _ => {}
        }
    }
    g
}

#[test]
fn a_pruned_network_computes_the_original_with_the_removed_channels_cut_off() {
    for g in graphs() {
        for (sparsity, scope) in [
            (0.2, Scope::PerSpace),
            (0.5, Scope::PerSpace),
            (0.3, Scope::Global),
        ] {
            let sp = prune::spaces(&g).unwrap();
            let kept = prune::select(&sp, &prune::l2_scores(&g, &sp), sparsity, scope).unwrap();
            let pruned = prune::apply(&g, &sp, &kept).unwrap();
            assert!(
                pruned.parameters() < g.parameters(),
                "{}: nothing removed",
                g.name
            );
            let x = random_images(2, g.input_shape, 5);
            let want = forward(&zero_removed_inputs(&g, &sp, &kept), &x, 2).unwrap();
            let got = forward(&pruned, &x, 2).unwrap();
            // Dropping terms that are exactly zero leaves the oracle's sums unchanged.
            assert_eq!(got, want, "{} at {sparsity} {scope:?}", g.name);
        }
    }
}

/// A random network of one of the three families: the tiny MobileFaceNet (a grouped
/// convolution, PReLU), arcface_torch's iresnet (residual stages with downsampling) or its
/// MobileFaceNet (depthwise blocks, residual stages, the flatten into the FC), with random
/// block counts and weights.
fn random_graph(family: usize, blocks: [usize; 4], seed: u64) -> Graph {
    let sd = match family {
        0 => return tiny_mobilefacenet(16, 8 + (seed % 24) as usize, seed).unwrap(),
        1 => iresnet_state_dict(blocks, 1, seed),
        _ => mobilefacenet_state_dict(blocks, 1, 1, seed),
    };
    let bytes = write_state_dict(&sd, "g").unwrap();
    import_bytes(&bytes, "g").unwrap().graph
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever channels the scores pick (random scores here, so any selection), at any
    /// sparsity and either scope, the pruned network equals the original with the removed
    /// channels' inputs zeroed, bit for bit on the oracle.
    #[test]
    fn any_channel_selection_computes_the_original_with_the_removed_channels_cut_off(
        family in 0usize..3,
        blocks in prop::array::uniform4(1usize..3),
        seed in any::<u64>(),
        sparsity in 0.05f32..0.6,
        global in any::<bool>(),
    ) {
        let g = random_graph(family, blocks, seed);
        let sp = prune::spaces(&g).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let scores: Vec<Vec<f32>> = prune::l2_scores(&g, &sp)
            .iter()
            .map(|s| s.iter().map(|_| rng.random::<f32>()).collect())
            .collect();
        let scope = if global { Scope::Global } else { Scope::PerSpace };
        let kept = prune::select(&sp, &scores, sparsity, scope).unwrap();
        let pruned = prune::apply(&g, &sp, &kept).unwrap();
        prop_assert!(pruned.parameters() <= g.parameters());
        prop_assert_eq!(pruned.embedding_dim().unwrap(), g.embedding_dim().unwrap());
        let x = random_images(2, g.input_shape, seed);
        let want = forward(&zero_removed_inputs(&g, &sp, &kept), &x, 2).unwrap();
        let got = forward(&pruned, &x, 2).unwrap();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn the_image_the_embedding_and_grouped_convolutions_keep_every_channel() {
    let g = tiny_mobilefacenet(16, 24, 3).unwrap();
    let pruned = prune::prune(&g, 0.5, Scope::PerSpace).unwrap();
    assert_eq!(pruned.input_shape, g.input_shape);
    assert_eq!(pruned.embedding_dim().unwrap(), 24);
    let sp = prune::spaces(&g).unwrap();
    let pinned: Vec<&str> = sp
        .spaces
        .iter()
        .filter_map(|s| s.pinned.as_deref())
        .collect();
    assert!(pinned.iter().any(|p| p.contains("'gconv'")), "{pinned:?}");
    let gconv = |g: &Graph| match &g.nodes.iter().find(|n| n.name == "gconv").unwrap().op {
        Op::Conv { weights, .. } => weights.shape().to_vec(),
        _ => unreachable!(),
    };
    assert_eq!(gconv(&pruned), gconv(&g));
}

#[test]
fn sparsity_zero_changes_nothing_and_a_residual_stage_prunes_as_one() {
    let g = &arcface_graphs()[0];
    assert_eq!(&prune::prune(g, 0.0, Scope::PerSpace).unwrap(), g);
    // iresnet18: each stage's blocks share one residual space (the Adds tie them).
    let sp = prune::spaces(g).unwrap();
    let mut residual: Vec<usize> = g
        .nodes
        .iter()
        .filter(|n| n.name.ends_with(".downsample.0"))
        .map(|n| sp.of_value[n.output])
        .collect();
    residual.dedup();
    assert_eq!(residual.len(), 4, "one residual space per stage");
    for s in residual {
        let space = &sp.spaces[s];
        assert!(space.pinned.is_none());
        let adds = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Add) && sp.of_value[n.output] == s)
            .count();
        assert_eq!(adds, 2, "both blocks' Adds of the stage are in its space");
    }
    let pruned = prune::prune(g, 0.2, Scope::PerSpace).unwrap();
    let macs = (pruned.macs().unwrap() as f64) / (g.macs().unwrap() as f64);
    assert!(
        (0.55..0.75).contains(&macs),
        "20 % of channels removed leaves {macs:.2} of the MACs"
    );
}

#[test]
fn a_quantized_graph_is_refused() {
    let g = tiny_mobilefacenet(16, 24, 3).unwrap();
    let layers = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Gemm { .. }))
        .count();
    let cfg = efq_shared::quant::QuantConfig::parse("w8a8").unwrap();
    let q = efq_shared::quant::quantize_graph(&g, &cfg, &vec![1.0; layers]).unwrap();
    let Err(e) = prune::prune(&q, 0.2, Scope::PerSpace) else {
        panic!("a quantized graph was pruned");
    };
    assert!(e.to_string().contains("quantized"), "{e}");
}
