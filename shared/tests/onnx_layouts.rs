//! ONNX as model zoos ship it: every layout of `layouts` imports to the plain network, with what
//! was baked in at the input (NHWC, normalisation) and output (L2 normalisation) reported, at
//! every opset from 9 to 21; what is none of them is refused naming the op and the node.
//!
//! `EFQ_ONNX_LAYOUT_DIR=dir cargo test -p efq-shared --test onnx_layouts` also writes each
//! accepted layout there for `scripts/check_onnx_layouts.py`, which checks with the `onnx`
//! checker and onnxruntime that the generated files mean what these tests take them to mean.

mod layouts;

use efq_shared::graph::{Graph, Op};
use efq_shared::onnx::{
    self, AttributeProto as A, BakedPreprocessing, Imported, NodeProto, TensorProto,
};
use efq_shared::{Error, reference};
use layouts::{Arith, Batch, Guard, Head, Layout, Net, Tail, raw_images};
use prost::Message;

fn import(layout: &Layout) -> Result<Imported, Error> {
    onnx::import_bytes_with_conventions(&layouts::write(layout), "layout")
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The layout imports, and the imported graph on the baked preprocessing of raw images gives
/// the plain network's output on the layout's own preprocessing of them.
fn imports_as_plain(name: &str, layout: &Layout) -> Imported {
    let imported = import(layout).unwrap_or_else(|e| panic!("{name}: {e}"));
    let plain = layout.net.graph();
    let g = &imported.graph;
    assert_eq!(g.input_shape, plain.input_shape, "{name}");
    let raw = raw_images(2, g.input_shape, 7);
    let expected =
        reference::forward(&plain, &layout.preprocessed(&raw, plain.input_shape), 2).unwrap();
    let mut x = raw;
    imported.baked.apply(&mut x, g.input_shape).unwrap();
    let got = reference::forward(g, &x, 2).unwrap();
    let err = max_rel_err(&expected, &got);
    assert!(err < 1e-4, "{name}: relative error {err}");
    assert_eq!(imported.baked.nhwc, layout.nhwc, "{name}");
    assert_eq!(
        imported.removed_l2_norm,
        layout.tail != Tail::None,
        "{name}"
    );
    assert_eq!(imported.opset, layout.opset, "{name}");
    write_for_onnxruntime(name, layout);
    imported
}

/// The error of importing `layout`, which must name every one of `needles`.
fn refused(layout: &Layout, needles: &[&str]) -> Error {
    refused_bytes(&layouts::write(layout), needles)
}

fn refused_bytes(bytes: &[u8], needles: &[&str]) -> Error {
    let e = match onnx::import_bytes_with_conventions(bytes, "layout") {
        Ok(_) => panic!("accepted a model that should be refused ({needles:?})"),
        Err(e) => e,
    };
    let s = e.to_string();
    for n in needles {
        assert!(s.contains(n), "expected '{n}' in: {s}");
    }
    e
}

fn affines(g: &Graph) -> usize {
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Affine { .. }))
        .count()
}

/// The standard normalisation `(x − 127.5) / 127.5` as two scalar nodes.
fn insightface_norm() -> Vec<Arith> {
    vec![Arith::scalar("Sub", 127.5), Arith::scalar("Div", 127.5)]
}

#[test]
fn the_plain_export_imports_with_nothing_baked_in() {
    let layout = Layout::default();
    let imported = imports_as_plain("plain", &layout);
    assert!(imported.baked.is_identity());
    assert_eq!(imported.baked, BakedPreprocessing::identity(3));
    assert!(!imported.removed_l2_norm);
    assert_eq!(imported.opset, 11);
    // The BatchNorms before the flatten and after the FC fold into the FC.
    assert_eq!(affines(&imported.graph), 0);
    // The plain entry points return the same graph.
    let bytes = layouts::write(&layout);
    assert_eq!(
        onnx::import_bytes(&bytes, "layout").unwrap(),
        imported.graph
    );
}

#[test]
fn a_fixed_named_unnamed_or_undeclared_batch_imports_the_same_network() {
    for batch in [
        Batch::Fixed(1),
        Batch::Named,
        Batch::Unnamed,
        Batch::AllNamed,
        Batch::NoShape,
        Batch::NoType,
    ] {
        let layout = Layout {
            batch,
            ..Layout::default()
        };
        imports_as_plain(&format!("batch {batch:?}"), &layout);
    }
}

#[test]
fn an_nhwc_input_and_its_leading_transpose_import_as_nchw() {
    for batch in [
        Batch::Fixed(1),
        Batch::Named,
        Batch::AllNamed,
        Batch::NoShape,
    ] {
        let layout = Layout {
            nhwc: true,
            batch,
            ..Layout::default()
        };
        let imported = imports_as_plain(&format!("nhwc {batch:?}"), &layout);
        assert_eq!(imported.graph.input_shape, [3, 112, 112]);
        assert!(imported.baked.nhwc);
        assert!(!imported.baked.is_identity());
        assert_eq!(imported.baked.uniform_mean_std(), Some((0.0, 1.0)));
    }
    // The file declares [N, 112, 112, 3].
    let m = layouts::model(&Layout {
        nhwc: true,
        ..Layout::default()
    });
    let dims: Vec<Option<i64>> = m.graph.unwrap().input[0]
        .r#type
        .clone()
        .unwrap()
        .tensor_type
        .unwrap()
        .shape
        .unwrap()
        .dim
        .iter()
        .map(|d| d.dim_value)
        .collect();
    assert_eq!(dims, [None, Some(112), Some(112), Some(3)]);
}

#[test]
fn normalisation_nodes_at_the_input_fold_into_baked_preprocessing() {
    let mean = [123.675, 116.28, 103.53];
    let std = [58.395, 57.12, 57.375];
    let cases: Vec<(&str, bool, Vec<Arith>, Vec<Arith>)> = vec![
        ("sub div scalars", false, vec![], insightface_norm()),
        (
            "sub mul per channel [1,3,1,1] and [3,1,1]",
            false,
            vec![],
            vec![
                Arith::channels("Sub", mean, &[1, 3, 1, 1]),
                Arith::channels("Mul", std.map(|s| 1.0 / s), &[3, 1, 1]),
            ],
        ),
        (
            "div 255 then torchvision's sub and div per channel",
            false,
            vec![],
            vec![
                Arith::scalar("Div", 255.0),
                Arith::channels("Sub", mean.map(|m| m / 255.0), &[1, 3, 1, 1]),
                Arith::channels("Div", std.map(|s| s / 255.0), &[1, 3, 1, 1]),
            ],
        ),
        (
            "add of a negative and mul, from Constant nodes",
            false,
            vec![],
            vec![
                Arith::scalar("Add", -127.5).in_constant_node(),
                Arith::scalar("Mul", 0.0078125).in_constant_node(),
            ],
        ),
        (
            "mul first, constants first, a [1] operand",
            false,
            vec![],
            vec![
                Arith::channels("Mul", [0.01, 0.02, 0.03], &[3, 1, 1]).const_first(),
                Arith {
                    shape: vec![1],
                    ..Arith::scalar("Sub", 1.2).const_first()
                },
            ],
        ),
        (
            "nhwc: per channel [3] and [1,1,1,3] before the transpose, scalar after",
            true,
            vec![
                Arith::channels("Sub", mean, &[3]),
                Arith::channels("Div", std, &[1, 1, 1, 3]),
            ],
            vec![Arith::scalar("Mul", 0.5)],
        ),
    ];
    for (name, nhwc, before_transpose, preprocess) in cases {
        let layout = Layout {
            nhwc,
            before_transpose,
            preprocess,
            ..Layout::default()
        };
        let imported = imports_as_plain(name, &layout);
        // The baked transform is the layout's on every channel.
        let b = &imported.baked;
        for c in 0..3 {
            let at = |x: f32| layout.arithmetic().fold(x, |x, a| a.eval(x, c));
            let (offset, scale) = (at(0.0), (at(1000.0) - at(0.0)) / 1000.0);
            let (s, o) = b.scale_offset()[c];
            assert!((o - offset).abs() < 1e-5, "{name}: offset {o} for {offset}");
            assert!(
                (s - scale).abs() < 1e-4 * scale.abs(),
                "{name}: scale {s} for {scale}"
            );
        }
        // No arithmetic node survives in the graph.
        assert_eq!(imported.graph.nodes[0].name, "conv1", "{name}");
    }
    // InsightFace's own convention comes back as the preprocessing's mean and std.
    let imported = import(&Layout {
        preprocess: insightface_norm(),
        ..Layout::default()
    })
    .unwrap();
    assert_eq!(imported.baked.uniform_mean_std(), Some((127.5, 127.5)));
    let torchvision = import(&Layout {
        preprocess: vec![
            Arith::channels("Sub", mean, &[1, 3, 1, 1]),
            Arith::channels("Div", std, &[1, 3, 1, 1]),
        ],
        ..Layout::default()
    })
    .unwrap();
    assert_eq!(torchvision.baked.uniform_mean_std(), None);
    assert_eq!(torchvision.baked.mean, mean);
    assert_eq!(torchvision.baked.std, std);
}

#[test]
fn flatten_reshape_and_squeeze_heads_import_as_a_flatten() {
    let reshape = |shape: &[i64], constant_node| Head::Reshape {
        shape: shape.to_vec(),
        constant_node,
    };
    let cases = [
        ("flatten", Net::Head, Head::Flatten, Batch::Named, 11),
        (
            "reshape [N,-1] init",
            Net::Head,
            reshape(&[0, -1], false),
            Batch::Named,
            11,
        ),
        (
            "reshape [0,-1] node",
            Net::Head,
            reshape(&[0, -1], true),
            Batch::Named,
            13,
        ),
        (
            "reshape [-1,784] node",
            Net::Head,
            reshape(&[-1, 784], true),
            Batch::Named,
            9,
        ),
        (
            "reshape [-1,784] init",
            Net::Head,
            reshape(&[-1, 784], false),
            Batch::Unnamed,
            21,
        ),
        (
            "reshape [1,-1] batch 1",
            Net::Head,
            reshape(&[1, -1], false),
            Batch::Fixed(1),
            11,
        ),
        (
            "reshape [1,784] batch 1",
            Net::Head,
            reshape(&[1, 784], true),
            Batch::Fixed(1),
            17,
        ),
        (
            "view(size(0),-1) 9",
            Net::Head,
            Head::ReshapeFromShape,
            Batch::Named,
            9,
        ),
        (
            "view(size(0),-1) 13",
            Net::Head,
            Head::ReshapeFromShape,
            Batch::Named,
            13,
        ),
        (
            "view(size(0),-1) 21",
            Net::Head,
            Head::ReshapeFromShape,
            Batch::Named,
            21,
        ),
        ("squeeze 11", Net::Mobile, Head::Squeeze, Batch::Named, 11),
        ("squeeze 13", Net::Mobile, Head::Squeeze, Batch::Named, 13),
        (
            "mobile flatten",
            Net::Mobile,
            Head::Flatten,
            Batch::Fixed(1),
            11,
        ),
    ];
    for (name, net, head, batch, opset) in cases {
        let layout = Layout {
            net,
            head,
            batch,
            opset,
            ..Layout::default()
        };
        let imported = imports_as_plain(name, &layout);
        let flattens = imported
            .graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Flatten))
            .count();
        assert_eq!(flattens, 1, "{name}");
    }
}

#[test]
fn batchnorm_before_or_after_the_flatten_folds_into_the_fc() {
    for (name, net) in [
        ("BN2d, flatten, fc, BN1d", Net::Head),
        ("flatten, BN1d, fc, BN1d", Net::FlattenBn),
    ] {
        assert_eq!(affines(&net.graph()), 2, "{name}");
        for head in [Head::Flatten, Head::ReshapeFromShape] {
            for opset in [9, 14] {
                let layout = Layout {
                    net,
                    head: head.clone(),
                    opset,
                    ..Layout::default()
                };
                let imported = imports_as_plain(&format!("{name} {head:?} {opset}"), &layout);
                assert_eq!(affines(&imported.graph), 0, "{name}");
            }
        }
    }
}

fn l2_tails() -> Vec<Tail> {
    let mut v = vec![Tail::LpNorm, Tail::SqrtReduceSumSquare];
    for guard in [
        Guard::None,
        Guard::Clip(1e-12),
        Guard::Max(1e-12),
        Guard::Add(1e-10),
    ] {
        v.push(Tail::ReduceL2 {
            guard,
            expand: false,
        });
        v.push(Tail::SqrtReduceSum { guard, pow: false });
    }
    v.push(Tail::ReduceL2 {
        guard: Guard::Clip(1e-12),
        expand: true,
    });
    v.push(Tail::SqrtReduceSum {
        guard: Guard::None,
        pow: true,
    });
    v
}

#[test]
fn trailing_l2_normalisations_are_removed_and_reported() {
    for tail in l2_tails() {
        for opset in [9, 11, 13, 17, 18, 21] {
            let layout = Layout {
                tail,
                opset,
                ..Layout::default()
            };
            let imported = imports_as_plain(&format!("{tail:?} opset {opset}"), &layout);
            assert!(imported.removed_l2_norm);
            assert_eq!(imported.graph.embedding_dim().unwrap(), 64);
        }
    }
}

/// One layout per opset with every op whose attributes moved between opsets: BatchNorm
/// (`training_mode` from 14), Dropout (ratio and training_mode inputs from 12),
/// Unsqueeze (axes input from 13), ReduceSum (13), ReduceL2 (18), Clip (bounds inputs from 11).
fn every_opset() -> Vec<(String, Layout)> {
    let mut v = Vec::new();
    for opset in onnx::MIN_OPSET..=onnx::MAX_OPSET {
        for (k, tail) in [
            Tail::SqrtReduceSum {
                guard: Guard::Clip(1e-12),
                pow: false,
            },
            Tail::ReduceL2 {
                guard: Guard::Clip(1e-12),
                expand: true,
            },
        ]
        .into_iter()
        .enumerate()
        {
            v.push((
                format!("opset {opset} tail {k}"),
                Layout {
                    opset,
                    nhwc: k == 1,
                    preprocess: insightface_norm(),
                    head: Head::ReshapeFromShape,
                    dropout: true,
                    tail,
                    ..Layout::default()
                },
            ));
        }
        // Upsample (9), Resize (X, scales) at 10, (X, roi, scales) at 11, roi omitted from 13,
        // scales of some axes from 18.
        v.push((
            format!("opset {opset} upsampling"),
            Layout {
                net: Net::Upsampling,
                opset,
                dropout: true,
                ..Layout::default()
            },
        ));
        v.push((
            format!("opset {opset} squeeze"),
            Layout {
                net: Net::Mobile,
                opset,
                head: Head::Squeeze,
                tail: Tail::LpNorm,
                ..Layout::default()
            },
        ));
    }
    v
}

#[test]
fn every_opset_from_9_to_21_reads_each_op_as_its_version_writes_it() {
    for (name, layout) in every_opset() {
        let imported = imports_as_plain(&name, &layout);
        if layout.net == Net::Upsampling {
            assert!(
                imported
                    .graph
                    .nodes
                    .iter()
                    .any(|n| n.op == Op::Upsample { factor: 2 }),
                "{name}"
            );
        }
    }
}

/// The layout's model with `edit` applied to its graph.
fn edited(layout: &Layout, edit: impl FnOnce(&mut efq_shared::onnx::GraphProto)) -> Vec<u8> {
    let mut m = layouts::model(layout);
    edit(m.graph.as_mut().unwrap());
    m.encode_to_vec()
}

fn node_mut<'a>(g: &'a mut efq_shared::onnx::GraphProto, name: &str) -> &'a mut NodeProto {
    g.node
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

#[test]
fn an_op_written_in_another_opsets_form_is_refused_naming_the_node() {
    // ReduceSum's axes became an input at 13: the attribute form is refused there, and the
    // input form before it.
    let sum = |opset| Layout {
        opset,
        tail: Tail::SqrtReduceSum {
            guard: Guard::None,
            pow: false,
        },
        ..Layout::default()
    };
    let b = edited(&sum(13), |g| {
        let n = node_mut(g, "tail.reducesum");
        n.input.truncate(1);
        n.attribute.push(A::ints("axes", &[1]));
    });
    refused_bytes(&b, &["'tail.reducesum'", "ReduceSum", "opset 13", "input"]);
    let b = edited(&sum(12), |g| {
        let n = node_mut(g, "tail.reducesum");
        n.attribute.retain(|a| a.name != "axes");
        n.input.push("tail.reducesum.axes".into());
        g.initializer
            .push(TensorProto::int64("tail.reducesum.axes", &[1], &[1]));
    });
    refused_bytes(&b, &["'tail.reducesum'", "opset 12", "attribute"]);
    // Unsqueeze's axes likewise at 13.
    let view = |opset| Layout {
        opset,
        head: Head::ReshapeFromShape,
        ..Layout::default()
    };
    let b = edited(&view(13), |g| {
        let n = node_mut(g, "head.unsqueeze");
        n.input.truncate(1);
        n.attribute.push(A::ints("axes", &[0]));
    });
    refused_bytes(&b, &["'head.unsqueeze'", "Unsqueeze", "opset 13"]);
    // Clip's bounds became inputs at 11.
    let clip = |opset| Layout {
        opset,
        tail: Tail::ReduceL2 {
            guard: Guard::Clip(1e-12),
            expand: false,
        },
        ..Layout::default()
    };
    let b = edited(&clip(11), |g| {
        let n = node_mut(g, "tail.clip");
        n.input.truncate(1);
        n.attribute.push(A::float("min", 1e-12));
    });
    refused_bytes(&b, &["'tail.clip'", "Clip", "opset 11"]);
    // Upsample is gone from opset 10; Resize does not exist at 9.
    let up = |opset| Layout {
        net: Net::Upsampling,
        opset,
        ..Layout::default()
    };
    let b = edited(&up(9), |g| {
        g.node.iter_mut().for_each(|n| {
            if n.op_type == "Upsample" {
                n.op_type = "Resize".into();
            }
        })
    });
    refused_bytes(&b, &["'up'", "Resize", "opset 10"]);
    let b = edited(&up(10), |g| node_mut(g, "up").op_type = "Upsample".into());
    refused_bytes(&b, &["'up'", "Upsample", "removed in opset 10"]);
    // Dropout's ratio is an attribute before 12: a second input there is malformed.
    let b = edited(
        &Layout {
            dropout: true,
            ..Layout::default()
        },
        |g| {
            node_mut(g, "head.dropout").input.push("fc.bias".into());
        },
    );
    refused_bytes(&b, &["'head.dropout'", "Dropout", "opset 11"]);
}

#[test]
fn opsets_outside_9_to_21_are_refused_naming_the_version() {
    for opset in [1, 8, 22, 100] {
        let mut m = layouts::model(&Layout::default());
        m.opset_import[0].version = opset;
        refused_bytes(&m.encode_to_vec(), &[&format!("opset {opset}"), "9 to 21"]);
    }
    let mut m = layouts::model(&Layout::default());
    m.opset_import[0].domain = "com.example".into();
    refused_bytes(&m.encode_to_vec(), &["no ai.onnx opset"]);
}

#[test]
fn training_mode_batchnorm_and_dropout_are_refused_naming_the_node() {
    let b = edited(
        &Layout {
            opset: 14,
            ..Layout::default()
        },
        |g| {
            let n = node_mut(g, "bn2");
            n.attribute.retain(|a| a.name != "training_mode");
            n.attribute.push(A::int("training_mode", 1));
        },
    );
    refused_bytes(&b, &["'bn2'", "BatchNormalization", "training_mode"]);
    let b = edited(
        &Layout {
            opset: 9,
            ..Layout::default()
        },
        |g| {
            let n = node_mut(g, "bn2");
            n.attribute.retain(|a| a.name != "spatial");
            n.attribute.push(A::int("spatial", 0));
        },
    );
    refused_bytes(&b, &["'bn2'", "spatial=0"]);
    let b = edited(
        &Layout {
            opset: 12,
            dropout: true,
            ..Layout::default()
        },
        |g| {
            g.initializer.retain(|t| t.name != "head.training");
            g.initializer
                .push(TensorProto::bool("head.training", &[], &[true]));
        },
    );
    refused_bytes(&b, &["'head.dropout'", "Dropout", "training_mode is true"]);
}

#[test]
fn arithmetic_away_from_the_input_is_refused_naming_the_node() {
    // A Sub after the first convolution.
    let b = edited(&Layout::default(), |g| {
        let at = g.node.iter().position(|n| n.name == "conv1.prelu").unwrap();
        let x = g.node[at].input[0].clone();
        g.node[at].input[0] = "shifted".into();
        g.initializer.push(TensorProto::float("k", &[], &[1.0]));
        g.node.insert(
            at,
            NodeProto::new("Sub", "late_sub", &[&x, "k"], &["shifted"]),
        );
    });
    refused_bytes(&b, &["'late_sub'", "Sub", "normalisation"]);
    // The same for a Mul of two computed values (an attention gate).
    let b = edited(&Layout::default(), |g| {
        let at = g.node.iter().position(|n| n.name == "conv1.prelu").unwrap();
        let x = g.node[at].input[0].clone();
        g.node[at].input[0] = "gated".into();
        g.node
            .insert(at, NodeProto::new("Mul", "gate", &[&x, &x], &["gated"]));
    });
    refused_bytes(&b, &["'gate'", "Mul", "two computed values"]);
    // At the input, but not per channel: a whole-image constant.
    let b = edited(
        &Layout {
            preprocess: insightface_norm(),
            ..Layout::default()
        },
        |g| {
            let k = g
                .initializer
                .iter_mut()
                .find(|t| t.name == "pre.div2.k")
                .unwrap();
            *k = TensorProto::float("pre.div2.k", &[1, 1, 112, 112], &vec![2.0; 112 * 112]);
        },
    );
    refused_bytes(&b, &["'pre.div2'", "Div", "per channel"]);
    // A constant divided by the image.
    let l = Layout {
        preprocess: vec![Arith::scalar("Div", 2.0).const_first()],
        ..Layout::default()
    };
    refused(
        &l,
        &["'pre.div1'", "Div", "divides a constant by the image"],
    );
    // Per-channel values for four channels.
    let l = Layout {
        preprocess: vec![Arith {
            values: vec![1.0; 4],
            shape: vec![1, 4, 1, 1],
            ..Arith::scalar("Sub", 0.0)
        }],
        ..Layout::default()
    };
    refused(&l, &["4 channels", "the input has 3"]);
    // A transpose of the input other than NHWC → NCHW.
    let b = edited(
        &Layout {
            nhwc: true,
            ..Layout::default()
        },
        |g| {
            let n = node_mut(g, "pre.transpose");
            n.attribute = vec![A::ints("perm", &[0, 3, 2, 1])];
        },
    );
    refused_bytes(&b, &["'pre.transpose'", "Transpose", "[0, 3, 2, 1]"]);
    // A transpose anywhere else is an unsupported op.
    let b = edited(&Layout::default(), |g| {
        let at = g.node.iter().position(|n| n.name == "conv1.prelu").unwrap();
        let x = g.node[at].input[0].clone();
        g.node[at].input[0] = "t".into();
        g.node.insert(
            at,
            NodeProto::new("Transpose", "late_t", &[&x], &["t"])
                .with(A::ints("perm", &[0, 1, 3, 2])),
        );
    });
    match onnx::import_bytes(&b, "x").unwrap_err() {
        Error::UnsupportedOp { op, node } => {
            assert_eq!((op.as_str(), node.as_str()), ("Transpose", "late_t"))
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn tails_that_are_not_an_l2_normalisation_are_refused_naming_the_node() {
    let with_tail = |edit: &dyn Fn(&mut efq_shared::onnx::GraphProto), tail| {
        edited(
            &Layout {
                tail,
                opset: 13,
                ..Layout::default()
            },
            edit,
        )
    };
    let l2 = Tail::ReduceL2 {
        guard: Guard::Clip(1e-12),
        expand: false,
    };
    // Over the batch axis; without keepdims; with a large "epsilon".
    let b = with_tail(
        &|g| node_mut(g, "tail.reducel2").attribute[1] = A::ints("axes", &[0]),
        l2,
    );
    refused_bytes(&b, &["'tail.reducel2'", "ReduceL2", "[0]"]);
    let b = with_tail(
        &|g| node_mut(g, "tail.reducel2").attribute[0] = A::int("keepdims", 0),
        l2,
    );
    refused_bytes(&b, &["'tail.reducel2'", "keepdims=0"]);
    let b = with_tail(
        &|g| {
            let t = g
                .initializer
                .iter_mut()
                .find(|t| t.name == "tail.eps")
                .unwrap();
            *t = TensorProto::float("tail.eps", &[], &[1.0]);
        },
        l2,
    );
    refused_bytes(&b, &["'tail.clip'", "Clip", "epsilon"]);
    // Dividing by a constant, or by the norm of something else.
    let b = with_tail(
        &|g| {
            g.initializer.push(TensorProto::float("two", &[], &[2.0]));
            node_mut(g, "tail.div").input[1] = "two".into();
        },
        l2,
    );
    refused_bytes(&b, &["'tail.div'", "Div", "not an L2 normalisation"]);
    let sum = Tail::SqrtReduceSum {
        guard: Guard::None,
        pow: false,
    };
    let b = with_tail(&|g| node_mut(g, "tail.mul").input[1] = "v3".into(), sum);
    refused_bytes(&b, &["'tail.reducesum'", "squared"]);
    // An L1 normalisation.
    let b = with_tail(
        &|g| node_mut(g, "tail.lpnorm").attribute[1] = A::int("p", 1),
        Tail::LpNorm,
    );
    refused_bytes(&b, &["'tail.lpnorm'", "p=1"]);
    // Another op at the end: unsupported, by name.
    let b = with_tail(
        &|g| {
            let out = g.output[0].name.clone();
            g.node.push(
                NodeProto::new("Softmax", "tail.softmax", &[&out], &["probs"])
                    .with(A::int("axis", 1)),
            );
            g.output[0].name = "probs".into();
        },
        Tail::None,
    );
    match onnx::import_bytes(&b, "x").unwrap_err() {
        Error::UnsupportedOp { op, node } => {
            assert_eq!((op.as_str(), node.as_str()), ("Softmax", "tail.softmax"))
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn reshapes_that_are_not_a_flatten_are_refused_naming_the_node() {
    for (shape, needle) in [
        (vec![-1, 100], "784 features, not the 100"),
        (vec![0, 16, -1], "not a flatten"),
        (vec![2, -1], "not a flatten"),
        (vec![-1], "not a flatten"),
    ] {
        let l = Layout {
            head: Head::Reshape {
                shape: shape.clone(),
                constant_node: false,
            },
            ..Layout::default()
        };
        refused(&l, &["'head.reshape'", "Reshape", needle]);
    }
    // allowzero=1 (opset 14) makes a 0 a zero.
    let b = edited(
        &Layout {
            opset: 14,
            head: Head::Reshape {
                shape: vec![0, -1],
                constant_node: false,
            },
            ..Layout::default()
        },
        |g| {
            node_mut(g, "head.reshape")
                .attribute
                .push(A::int("allowzero", 1))
        },
    );
    refused_bytes(&b, &["'head.reshape'", "not a flatten"]);
    // Squeezing a value whose spatial size is not 1×1.
    let l = Layout {
        head: Head::Squeeze,
        ..Layout::default()
    };
    refused(&l, &["'head.squeeze'", "[16, 7, 7]"]);
}

#[test]
fn the_real_teacher_imports_with_nothing_baked_in() {
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let path = std::path::Path::new(&home).join(".cache/efquantface/models/w600k_mbf.onnx");
    if !path.exists() {
        eprintln!("skipped: no {}", path.display());
        return;
    }
    let imported = onnx::import_file_with_conventions(&path).unwrap();
    assert!(imported.baked.is_identity());
    assert!(!imported.removed_l2_norm);
    assert_eq!(imported.opset, 11);
    assert_eq!(imported.graph.embedding_dim().unwrap(), 512);
}

/// With `EFQ_ONNX_LAYOUT_DIR` set: the layout's file, the plain export of its network, and
/// what the first computes from the second's input (for `scripts/check_onnx_layouts.py`).
fn write_for_onnxruntime(name: &str, layout: &Layout) {
    // onnxruntime refuses an input without a type; the importer assumes an image.
    let Some(dir) =
        std::env::var_os("EFQ_ONNX_LAYOUT_DIR").filter(|_| layout.batch != Batch::NoType)
    else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stem: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let plain = onnx::export_bytes(&layout.net.graph()).unwrap();
    std::fs::write(dir.join(format!("{stem}.onnx")), layouts::write(layout)).unwrap();
    std::fs::write(dir.join(format!("{stem}.plain.onnx")), plain).unwrap();
    let ops: Vec<serde_json::Value> = layout
        .arithmetic()
        .map(|a| serde_json::json!({"op": a.op, "values": a.values, "const_first": a.const_first}))
        .collect();
    let spec = serde_json::json!({
        "name": name,
        "nhwc": layout.nhwc,
        "fixed_batch": matches!(layout.batch, Batch::Fixed(_)),
        "valid_onnx": layout.batch.valid_onnx(),
        "l2": layout.tail != Tail::None,
        "ops": ops,
    });
    std::fs::write(dir.join(format!("{stem}.json")), spec.to_string()).unwrap();
}

/// Integers a fuzzer tries on attributes, axes and shapes.
const NASTY: [i64; 14] = [
    0,
    1,
    -1,
    2,
    3,
    4,
    -4,
    5,
    65,
    1 << 31,
    -(1 << 31),
    1 << 62,
    i64::MIN,
    i64::MAX,
];

/// The file loads and runs on the reference, or is refused; nothing panics.
fn loads_then_runs(m: &efq_shared::onnx::ModelProto) {
    if let Ok(imported) = onnx::import_bytes_with_conventions(&m.encode_to_vec(), "mutant") {
        let g = &imported.graph;
        let x = raw_images(1, g.input_shape, 1);
        reference::forward(g, &x, 1).expect("an imported model runs");
    }
}

#[test]
fn every_attribute_and_integer_constant_set_to_edge_values_imports_safely_or_is_refused() {
    let mut tried = 0;
    for layout in [
        Layout {
            opset: 9,
            nhwc: true,
            preprocess: insightface_norm(),
            head: Head::ReshapeFromShape,
            dropout: true,
            tail: Tail::ReduceL2 {
                guard: Guard::Clip(1e-12),
                expand: true,
            },
            ..Layout::default()
        },
        Layout {
            opset: 21,
            head: Head::ReshapeFromShape,
            dropout: true,
            tail: Tail::SqrtReduceSum {
                guard: Guard::Max(1e-12),
                pow: true,
            },
            ..Layout::default()
        },
        Layout {
            net: Net::Upsampling,
            opset: 18,
            tail: Tail::LpNorm,
            ..Layout::default()
        },
        Layout {
            net: Net::Upsampling,
            opset: 10,
            ..Layout::default()
        },
    ] {
        let base = layouts::model(&layout);
        let graph = base.graph.as_ref().unwrap();
        for k in 0..graph.node.len() {
            for a in 0..graph.node[k].attribute.len() {
                let attr = &graph.node[k].attribute[a];
                let slots: Vec<Option<usize>> = if attr.ints.is_empty() {
                    vec![None]
                } else {
                    (0..attr.ints.len()).map(Some).collect()
                };
                for slot in slots {
                    for v in NASTY {
                        let mut m = base.clone();
                        let attr = &mut m.graph.as_mut().unwrap().node[k].attribute[a];
                        match slot {
                            Some(i) => attr.ints[i] = v,
                            None => {
                                attr.i = v;
                                attr.f = v as f32;
                            }
                        }
                        loads_then_runs(&m);
                        tried += 1;
                    }
                }
            }
        }
        // Integer constants: shapes, axes, gather indices (initializers and Constant nodes).
        for t in 0..graph.initializer.len() {
            if graph.initializer[t].data_type != 7 {
                continue;
            }
            for i in 0..graph.initializer[t].raw_data.len() / 8 {
                for v in NASTY {
                    let mut m = base.clone();
                    let t = &mut m.graph.as_mut().unwrap().initializer[t];
                    t.raw_data[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
                    loads_then_runs(&m);
                    tried += 1;
                }
            }
        }
    }
    assert!(tried > 1000, "only {tried} mutants");
}
