//! Per-layer quantization sensitivity: how far the embedding moves from the teacher's when only
//! one layer is quantized (weights only, activations only, both), on a few face crops.
//!
//! Usage: cargo run --release -p efq-shared --example sensitivity -- TEACHER.onnx STUDENT.efq CROPS_DIR [IMAGES]
//! The student must come from the same teacher without equalization (`trainer quantize
//! --no-equalize`), so that its nodes line up with the teacher's.

use efq_shared::cpu;
use efq_shared::format::PackedModel;
use efq_shared::graph::{Graph, Op, Weights};
use efq_shared::preprocess::load_face;

fn cosines(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let mut sum = 0.0;
    for (x, y) in a.chunks(dim).zip(b.chunks(dim)) {
        let dot: f64 = x
            .iter()
            .zip(y)
            .map(|(p, q)| (*p as f64) * (*q as f64))
            .sum();
        let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        sum += dot / (nx * ny);
    }
    sum / (a.len() / dim) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let student = PackedModel::load(&args[2])?;
    // "-" for the teacher: the student itself with float (dequantized) weights and no
    // activation quantization, which lines up with an equalized student too.
    let teacher = if args[1] == "-" {
        let mut g = student.graph.clone();
        for node in &mut g.nodes {
            if let Op::Conv {
                weights,
                input_quant,
                ..
            }
            | Op::Gemm {
                weights,
                input_quant,
                ..
            } = &mut node.op
            {
                *weights = Weights::Float(weights.to_float());
                *input_quant = None;
            }
        }
        g
    } else {
        efq_shared::onnx::import_file(&args[1])?
    };
    let n: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let mut files = Vec::new();
    for d in std::fs::read_dir(&args[3])? {
        for f in std::fs::read_dir(d?.path())? {
            files.push(f?.path());
        }
    }
    files.sort();
    let step = (files.len() / n).max(1);
    let pre = &student.manifest.preprocessing;
    let mut x = Vec::new();
    for f in files.iter().step_by(step).take(n) {
        x.extend(load_face(f, pre)?);
    }
    let dim = teacher.embedding_dim()?;
    let want = cpu::forward(&teacher, &x, n)?;
    let all = cpu::forward(&student.graph, &x, n)?;
    println!(
        "all layers quantized: mean cosine {:.5}",
        cosines(&all, &want, dim)
    );
    println!("| k | node | kind | 1−cos W only | 1−cos A only | 1−cos both |");
    println!("|---|---|---|---:|---:|---:|");
    let mut k = 0;
    for (i, (t, s)) in teacher.nodes.iter().zip(&student.graph.nodes).enumerate() {
        let (
            Op::Conv {
                weights: tw,
                input_quant: None,
                attrs,
                ..
            },
            Op::Conv {
                weights: sw,
                input_quant: Some(aq),
                ..
            },
        ) = (&t.op, &s.op)
        else {
            if let (Op::Gemm { .. }, Op::Gemm { .. }) = (&t.op, &s.op) {
                k += 1;
            }
            continue;
        };
        let kind = if attrs.group > 1 && tw.shape()[1] == 1 {
            "dw"
        } else if attrs.group > 1 {
            "grouped"
        } else if tw.shape()[2] == 1 {
            "pw"
        } else {
            "conv"
        };
        let with = |op: Op| -> Result<f64, Box<dyn std::error::Error>> {
            let mut g: Graph = teacher.clone();
            g.nodes[i].op = op;
            Ok(1.0 - cosines(&cpu::forward(&g, &x, n)?, &want, dim))
        };
        let mut w_only = t.op.clone();
        let mut a_only = t.op.clone();
        if let Op::Conv { weights, .. } = &mut w_only {
            *weights = Weights::Float(sw.to_float());
        }
        if let Op::Conv { input_quant, .. } = &mut a_only {
            *input_quant = Some(*aq);
        }
        println!(
            "| {k} | {} | {kind} a{} | {:.2e} | {:.2e} | {:.2e} |",
            t.name,
            aq.bits,
            with(w_only)?,
            with(a_only)?,
            with(s.op.clone())?
        );
        k += 1;
    }
    Ok(())
}
