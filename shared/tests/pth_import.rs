//! arcface_torch checkpoints (`backbone.pth`): generated in the layout torch.save writes,
//! imported, and checked against arcface_torch's forward pass written out naively here
//! (`torch.nn` semantics, straight from the state dict: no ONNX, no BatchNorm folding).

use efq_shared::graph::Tensor;
use efq_shared::pth::generate::{iresnet_state_dict, mobilefacenet_state_dict};
use efq_shared::pth::{self, StateDict, write_state_dict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPS: f32 = 1e-5;

/// A feature map `[C, H, W]` of one image.
#[derive(Clone)]
struct Map {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f32>,
}

/// arcface_torch's forward, module by module, naively.
struct Torch<'a> {
    sd: &'a StateDict,
}

impl Torch<'_> {
    fn t(&self, k: &str) -> &Tensor {
        self.sd.get(k).unwrap_or_else(|| panic!("no {k}"))
    }
    fn conv(&self, x: &Map, p: &str, stride: usize, pad: usize) -> Map {
        let w = self.t(&format!("{p}.weight"));
        let (o, cg, k) = (w.shape[0], w.shape[1], w.shape[2]);
        let groups = x.c / cg;
        let og = o / groups;
        let oh = (x.h + 2 * pad - k) / stride + 1;
        let ow = (x.w + 2 * pad - k) / stride + 1;
        let mut v = vec![0f32; o * oh * ow];
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f32;
                    for ci in 0..cg {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                let xi = ((g * cg + ci) * x.h + iy as usize) * x.w + ix as usize;
                                acc += x.v[xi] * w.data[((oc * cg + ci) * k + ky) * k + kx];
                            }
                        }
                    }
                    v[(oc * oh + oy) * ow + ox] = acc;
                }
            }
        }
        Map {
            c: o,
            h: oh,
            w: ow,
            v,
        }
    }
    fn bn(&self, x: &Map, p: &str) -> Map {
        let get = |s: &str| &self.t(&format!("{p}.{s}")).data;
        let (g, b, m, var) = (
            get("weight"),
            get("bias"),
            get("running_mean"),
            get("running_var"),
        );
        let hw = x.h * x.w;
        let mut y = x.clone();
        for (i, v) in y.v.iter_mut().enumerate() {
            let c = i / hw;
            *v = (*v - m[c]) / (var[c] + EPS).sqrt() * g[c] + b[c];
        }
        y
    }
    fn prelu(&self, x: &Map, p: &str) -> Map {
        let a = &self.t(&format!("{p}.weight")).data;
        let hw = x.h * x.w;
        let mut y = x.clone();
        for (i, v) in y.v.iter_mut().enumerate() {
            if *v < 0.0 {
                *v *= a[i / hw];
            }
        }
        y
    }
    fn add(a: &Map, b: &Map) -> Map {
        let mut y = a.clone();
        y.v.iter_mut().zip(&b.v).for_each(|(x, y)| *x += y);
        y
    }
    /// Flatten, `nn.Linear`, `BatchNorm1d`.
    fn head(&self, x: &Map, fc: &str, features: &str) -> Vec<f32> {
        let w = self.t(&format!("{fc}.weight"));
        let bias = self.sd.get(&format!("{fc}.bias"));
        let (o, fin) = (w.shape[0], w.shape[1]);
        let y: Vec<f32> = (0..o)
            .map(|j| {
                let dot: f32 = (0..fin).map(|i| x.v[i] * w.data[j * fin + i]).sum();
                dot + bias.map_or(0.0, |b| b.data[j])
            })
            .collect();
        let m = Map {
            c: o,
            h: 1,
            w: 1,
            v: y,
        };
        self.bn(&m, features).v
    }

    fn iresnet(&self, x: &Map) -> Vec<f32> {
        let mut x = self.prelu(&self.bn(&self.conv(x, "conv1", 1, 1), "bn1"), "prelu");
        for s in 1..=4 {
            let mut blk = 0;
            while self
                .sd
                .get(&format!("layer{s}.{blk}.conv1.weight"))
                .is_some()
            {
                let p = format!("layer{s}.{blk}");
                let stride = if blk == 0 { 2 } else { 1 };
                let mut y = self.bn(&x, &format!("{p}.bn1"));
                y = self.conv(&y, &format!("{p}.conv1"), 1, 1);
                y = self.prelu(&self.bn(&y, &format!("{p}.bn2")), &format!("{p}.prelu"));
                y = self.bn(
                    &self.conv(&y, &format!("{p}.conv2"), stride, 1),
                    &format!("{p}.bn3"),
                );
                let identity = if blk == 0 {
                    let d = self.conv(&x, &format!("{p}.downsample.0"), stride, 0);
                    self.bn(&d, &format!("{p}.downsample.1"))
                } else {
                    x.clone()
                };
                x = Self::add(&y, &identity);
                blk += 1;
            }
        }
        self.head(&self.bn(&x, "bn2"), "fc", "features")
    }

    fn block(&self, x: &Map, p: &str, stride: usize, prelu: bool) -> Map {
        let k = self.t(&format!("{p}.layers.0.weight")).shape[2];
        let y = self.bn(
            &self.conv(x, &format!("{p}.layers.0"), stride, k / 2),
            &format!("{p}.layers.1"),
        );
        if prelu {
            self.prelu(&y, &format!("{p}.layers.2"))
        } else {
            y
        }
    }
    fn depthwise(&self, x: &Map, p: &str, stride: usize, residual: bool) -> Map {
        let y = self.block(x, &format!("{p}.layers.0"), 1, true);
        let y = self.block(&y, &format!("{p}.layers.1"), stride, true);
        let y = self.block(&y, &format!("{p}.layers.2"), 1, false);
        if residual { Self::add(x, &y) } else { y }
    }
    fn mobilefacenet(&self, x: &Map) -> Vec<f32> {
        let mut x = self.block(x, "layers.0", 2, true);
        x = if self.sd.get("layers.1.layers.0.weight").is_some() {
            self.block(&x, "layers.1", 1, true)
        } else {
            self.residual(&x, "layers.1")
        };
        x = self.depthwise(&x, "layers.2", 2, false);
        x = self.residual(&x, "layers.3");
        x = self.depthwise(&x, "layers.4", 2, false);
        x = self.residual(&x, "layers.5");
        x = self.depthwise(&x, "layers.6", 2, false);
        x = self.residual(&x, "layers.7");
        x = self.block(&x, "conv_sep", 1, true);
        let gdc = self.conv(&x, "features.layers.0.layers.0", 1, 0);
        let gdc = self.bn(&gdc, "features.layers.0.layers.1");
        self.head(&gdc, "features.layers.2", "features.layers.3")
    }
    fn residual(&self, x: &Map, p: &str) -> Map {
        let mut x = x.clone();
        let mut j = 0;
        while self
            .sd
            .get(&format!("{p}.layers.{j}.layers.0.layers.0.weight"))
            .is_some()
        {
            x = self.depthwise(&x, &format!("{p}.layers.{j}"), 1, true);
            j += 1;
        }
        x
    }
}

fn image(side: usize, seed: u64) -> Map {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Map {
        c: 3,
        h: side,
        w: side,
        v: (0..3 * side * side)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
    }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "worst difference {worst} of range {scale}"
    );
}

#[test]
fn an_iresnet18_checkpoint_computes_arcface_torchs_forward() {
    // iresnet18's blocks; the fc sized for a 1×1 last map, so the input is 16×16.
    let sd = iresnet_state_dict([2, 2, 2, 2], 1, 1);
    let bytes = write_state_dict(&sd, "backbone").unwrap();
    let imported = pth::import_bytes(&bytes, "backbone").unwrap();
    let g = &imported.graph;
    assert_eq!(g.input_shape, [3, 16, 16]);
    let x = image(16, 2);
    let got = efq_shared::reference::forward(g, &x.v, 1).unwrap();
    assert_close(&got, &Torch { sd: &sd }.iresnet(&x));
}

#[test]
fn a_mobilefacenet_checkpoint_computes_arcface_torchs_forward() {
    // Both forms of the second layer: a grouped ConvBlock (blocks[0] = 1) and a Residual.
    for (blocks, seed) in [([1, 2, 1, 1], 3), ([2, 1, 1, 1], 4)] {
        let sd = mobilefacenet_state_dict(blocks, 1, 1, seed);
        let bytes = write_state_dict(&sd, "backbone").unwrap();
        let imported = pth::import_bytes(&bytes, "backbone").unwrap();
        assert_eq!(imported.graph.input_shape, [3, 16, 16]);
        let x = image(16, seed);
        let got = efq_shared::reference::forward(&imported.graph, &x.v, 1).unwrap();
        assert_close(&got, &Torch { sd: &sd }.mobilefacenet(&x));
    }
}

#[test]
fn a_checkpoint_imports_as_its_onnx_export_bit_for_bit() {
    let sd = iresnet_state_dict([1, 1, 1, 1], 1, 5);
    let bytes = write_state_dict(&sd, "r").unwrap();
    let onnx = pth::onnx_bytes(&bytes, "r").unwrap();
    let from_onnx = efq_shared::onnx::import_bytes_with_conventions(&onnx, "r").unwrap();
    assert_eq!(pth::import_bytes(&bytes, "r").unwrap(), from_onnx);
}

#[test]
fn ddp_prefixed_keys_read_as_the_bare_state_dict() {
    let sd = iresnet_state_dict([1, 1, 1, 1], 1, 6);
    let bare = pth::read_state_dict(&write_state_dict(&sd, "a").unwrap()).unwrap();
    assert_eq!(bare.tensors, sd.tensors);
    let mut ddp = sd.clone();
    ddp.tensors
        .iter_mut()
        .for_each(|(k, _)| *k = format!("module.{k}"));
    ddp.other
        .iter_mut()
        .for_each(|k| *k = format!("module.{k}"));
    let read = pth::read_state_dict(&write_state_dict(&ddp, "b").unwrap()).unwrap();
    assert_eq!(read.tensors, sd.tensors);
    assert_eq!(read.other, sd.other);
}

fn refusal(sd: &StateDict) -> String {
    let bytes = write_state_dict(sd, "x").unwrap();
    match pth::import_bytes(&bytes, "x") {
        Ok(_) => panic!("imported"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn other_networks_and_damaged_checkpoints_are_refused_naming_the_tensor() {
    let sd = iresnet_state_dict([1, 1, 1, 1], 1, 7);

    let mut extra = sd.clone();
    extra
        .tensors
        .push(("head.weight".into(), extra.tensors[0].1.clone()));
    let e = refusal(&extra);
    assert!(
        e.contains("head.weight") && e.contains("not part of"),
        "{e}"
    );

    let mut missing = sd.clone();
    missing
        .tensors
        .retain(|(k, _)| k != "layer2.0.bn3.running_var");
    let e = refusal(&missing);
    assert!(e.contains("layer2.0.bn3.running_var"), "{e}");

    let mut wrong = sd.clone();
    let i = wrong
        .tensors
        .iter()
        .position(|(k, _)| k == "layer3.0.conv1.weight")
        .unwrap();
    wrong.tensors[i].1.shape = vec![256, 64, 3, 3];
    wrong.tensors[i].1.data.truncate(256 * 64 * 9);
    let e = refusal(&wrong);
    assert!(e.contains("layer3.0.conv1"), "{e}");

    let unknown = StateDict {
        tensors: vec![("encoder.weight".into(), sd.tensors[0].1.clone())],
        other: vec![],
    };
    let e = refusal(&unknown);
    assert!(
        e.contains("not an arcface_torch backbone") && e.contains("encoder.weight"),
        "{e}"
    );
}

#[test]
fn cut_or_flipped_checkpoint_bytes_give_errors_not_panics() {
    let sd = iresnet_state_dict([1, 1, 1, 1], 1, 8);
    let bytes = write_state_dict(&sd, "x").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..200 {
        let mut b = bytes.clone();
        if rng.random_bool(0.5) {
            b.truncate(rng.random_range(0..bytes.len()));
        } else {
            // Flip bytes in the zip directory or the pickle, where structure lives.
            for _ in 0..4 {
                let near_end = bytes.len() - rng.random_range(1..2000.min(bytes.len()));
                let at = if rng.random_bool(0.5) {
                    near_end
                } else {
                    rng.random_range(0..300)
                };
                b[at] ^= 1 << rng.random_range(0..8);
            }
        }
        let _ = pth::import_bytes(&b, "x");
    }
    for (head, what) in [
        (&b"\x80\x02}q\x00."[..], "legacy"),
        (b"hello", "not a PyTorch"),
    ] {
        let Err(e) = pth::import_bytes(head, "x") else {
            panic!("{what}: imported");
        };
        let e = e.to_string();
        assert!(e.contains(what), "{e}");
    }
}
