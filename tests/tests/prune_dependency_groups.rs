//! The channel groups `trainer prune` finds (DepGraph's dependency groups) in the two network
//! families the project supports, against lists checked by hand from the architectures:
//! InsightFace's `w600k_mbf` (MobileFaceNet, scale 2, BatchNorms folded by the exporter) and
//! arcface_torch's iresnet34 (generated weights; the importer folds the BatchNorms after each
//! convolution, the block's leading `bn1` stays an affine layer on the block's input).
//! Each line: channels, whether they may be pruned, and the nodes whose parameters a channel
//! of the group indexes (a convolution appears in the group of its input and of its output).

use efq_shared::graph::Graph;
use efq_shared::prune;
use efq_shared::pth::generate::iresnet_state_dict;
use efq_shared::pth::{import_bytes, write_state_dict};

fn groups(g: &Graph) -> Vec<String> {
    prune::spaces(g)
        .unwrap()
        .spaces
        .iter()
        .filter(|s| !s.nodes.is_empty())
        .map(|s| {
            let kind = if s.pinned.is_some() {
                "kept"
            } else {
                "prunable"
            };
            format!("{} {kind}: {}", s.channels, s.nodes.join(" "))
        })
        .collect()
}

/// w600k_mbf: the stem (3 → 128) feeds a grouped convolution (64 groups of 2), whose channels
/// are kept whole on both sides; then each depthwise block (expand 1×1, depthwise 3×3, project
/// 1×1) has its own inner group, and the projections of a stage share the stage's residual
/// group with the Adds; the last 1×1 (512 → 64) hands 64 channels × 7 × 7 to the FC.
const W600K_MBF: &[&str] = &[
    "3 kept: Conv_0",
    "128 kept: Conv_0 PRelu_1 Conv_2",
    "128 kept: Conv_2 PRelu_3 Conv_4",
    "128 prunable: Conv_4 PRelu_5 Conv_6 PRelu_7 Conv_8",
    "128 prunable: Conv_8 Conv_9 Conv_13 Conv_15 Conv_19 Conv_21 Conv_25 Conv_27 Conv_31 Conv_33",
    "128 prunable: Conv_9 PRelu_10 Conv_11 PRelu_12 Conv_13",
    "128 prunable: Conv_15 PRelu_16 Conv_17 PRelu_18 Conv_19",
    "128 prunable: Conv_21 PRelu_22 Conv_23 PRelu_24 Conv_25",
    "128 prunable: Conv_27 PRelu_28 Conv_29 PRelu_30 Conv_31",
    "256 prunable: Conv_33 PRelu_34 Conv_35 PRelu_36 Conv_37",
    "256 prunable: Conv_37 Conv_38 Conv_42 Conv_44 Conv_48 Conv_50 Conv_54 Conv_56 Conv_60 Conv_62 Conv_66 Conv_68 Conv_72 Conv_74",
    "256 prunable: Conv_38 PRelu_39 Conv_40 PRelu_41 Conv_42",
    "256 prunable: Conv_44 PRelu_45 Conv_46 PRelu_47 Conv_48",
    "256 prunable: Conv_50 PRelu_51 Conv_52 PRelu_53 Conv_54",
    "256 prunable: Conv_56 PRelu_57 Conv_58 PRelu_59 Conv_60",
    "256 prunable: Conv_62 PRelu_63 Conv_64 PRelu_65 Conv_66",
    "256 prunable: Conv_68 PRelu_69 Conv_70 PRelu_71 Conv_72",
    "512 prunable: Conv_74 PRelu_75 Conv_76 PRelu_77 Conv_78",
    "256 prunable: Conv_78 Conv_79 Conv_83 Conv_85 Conv_89 Conv_91",
    "256 prunable: Conv_79 PRelu_80 Conv_81 PRelu_82 Conv_83",
    "256 prunable: Conv_85 PRelu_86 Conv_87 PRelu_88 Conv_89",
    "512 prunable: Conv_91 PRelu_92 Conv_93",
    "64 prunable: Conv_93 PRelu_94 Gemm_96",
    "512 kept: Gemm_96",
];

/// iresnet34 (3, 4, 6, 3 blocks): the stem's 64 channels (with the first block's `bn1` and
/// both its convolution and its downsample reading them); per stage one residual group (the
/// downsample's output, every block's `conv2` output and the next block's input) and one
/// inner group per block (`conv1` → PReLU → `conv2`); the last residual group reaches the FC
/// through the flatten; the embedding is kept.
const IRESNET34: &[&str] = &[
    "3 kept: conv1",
    "64 prunable: conv1 prelu layer1.0.downsample.0 layer1.0.bn1 layer1.0.conv1",
    "64 prunable: layer1.0.downsample.0 layer1.0.conv2 layer1.1.bn1 layer1.1.conv1 layer1.1.conv2 layer1.2.bn1 layer1.2.conv1 layer1.2.conv2 layer2.0.downsample.0 layer2.0.bn1 layer2.0.conv1",
    "64 prunable: layer1.0.conv1 layer1.0.prelu layer1.0.conv2",
    "64 prunable: layer1.1.conv1 layer1.1.prelu layer1.1.conv2",
    "64 prunable: layer1.2.conv1 layer1.2.prelu layer1.2.conv2",
    "128 prunable: layer2.0.downsample.0 layer2.0.conv2 layer2.1.bn1 layer2.1.conv1 layer2.1.conv2 layer2.2.bn1 layer2.2.conv1 layer2.2.conv2 layer2.3.bn1 layer2.3.conv1 layer2.3.conv2 layer3.0.downsample.0 layer3.0.bn1 layer3.0.conv1",
    "128 prunable: layer2.0.conv1 layer2.0.prelu layer2.0.conv2",
    "128 prunable: layer2.1.conv1 layer2.1.prelu layer2.1.conv2",
    "128 prunable: layer2.2.conv1 layer2.2.prelu layer2.2.conv2",
    "128 prunable: layer2.3.conv1 layer2.3.prelu layer2.3.conv2",
    "256 prunable: layer3.0.downsample.0 layer3.0.conv2 layer3.1.bn1 layer3.1.conv1 layer3.1.conv2 layer3.2.bn1 layer3.2.conv1 layer3.2.conv2 layer3.3.bn1 layer3.3.conv1 layer3.3.conv2 layer3.4.bn1 layer3.4.conv1 layer3.4.conv2 layer3.5.bn1 layer3.5.conv1 layer3.5.conv2 layer4.0.downsample.0 layer4.0.bn1 layer4.0.conv1",
    "256 prunable: layer3.0.conv1 layer3.0.prelu layer3.0.conv2",
    "256 prunable: layer3.1.conv1 layer3.1.prelu layer3.1.conv2",
    "256 prunable: layer3.2.conv1 layer3.2.prelu layer3.2.conv2",
    "256 prunable: layer3.3.conv1 layer3.3.prelu layer3.3.conv2",
    "256 prunable: layer3.4.conv1 layer3.4.prelu layer3.4.conv2",
    "256 prunable: layer3.5.conv1 layer3.5.prelu layer3.5.conv2",
    "512 prunable: layer4.0.downsample.0 layer4.0.conv2 layer4.1.bn1 layer4.1.conv1 layer4.1.conv2 layer4.2.bn1 layer4.2.conv1 layer4.2.conv2 fc",
    "512 prunable: layer4.0.conv1 layer4.0.prelu layer4.0.conv2",
    "512 prunable: layer4.1.conv1 layer4.1.prelu layer4.1.conv2",
    "512 prunable: layer4.2.conv1 layer4.2.prelu layer4.2.conv2",
    "512 kept: fc",
];

#[test]
fn the_channel_groups_of_w600k_mbf_are_the_hand_checked_list() {
    let g = efq_shared::onnx::import_file(efq_tests::teacher()).unwrap();
    assert_eq!(groups(&g), W600K_MBF);
}

#[test]
fn the_channel_groups_of_iresnet34_are_the_hand_checked_list() {
    let sd = iresnet_state_dict([3, 4, 6, 3], 7, 1);
    let g = import_bytes(&write_state_dict(&sd, "r34").unwrap(), "r34")
        .unwrap()
        .graph;
    assert_eq!(groups(&g), IRESNET34);
}
