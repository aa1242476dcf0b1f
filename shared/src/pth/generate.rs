//! arcface_torch state dicts with seeded random weights, in the exact key layout its
//! `backbones/iresnet.py` and `backbones/mobilefacenet.py` produce (`num_batches_tracked`
//! included): for tests, and for `trainer generate --out model.pth`, since no trained iresnet
//! checkpoint can be downloaded here.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::StateDict;
use crate::graph::Tensor;

struct Gen {
    rng: ChaCha8Rng,
    sd: StateDict,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            sd: StateDict::default(),
        }
    }
    fn put(&mut self, key: &str, shape: &[usize], lo: f32, hi: f32) {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        self.sd.tensors.push((
            key.into(),
            Tensor {
                shape: shape.to_vec(),
                data,
            },
        ));
    }
    fn conv(&mut self, p: &str, o: usize, i: usize, k: usize, gain: f32) {
        let b = gain * (3.0 / (i * k * k) as f32).sqrt();
        self.put(&format!("{p}.weight"), &[o, i, k, k], -b, b);
    }
    fn bn(&mut self, p: &str, c: usize) {
        self.put(&format!("{p}.weight"), &[c], 0.8, 1.2);
        self.put(&format!("{p}.bias"), &[c], -0.1, 0.1);
        self.put(&format!("{p}.running_mean"), &[c], -0.1, 0.1);
        self.put(&format!("{p}.running_var"), &[c], 0.5, 1.5);
        self.sd.other.push(format!("{p}.num_batches_tracked"));
    }
    fn prelu(&mut self, p: &str, c: usize) {
        self.put(&format!("{p}.weight"), &[c], 0.1, 0.3);
    }
}

/// arcface_torch `IResNet` with `layers` blocks per stage and an fc for a `side`×`side` last
/// map (7 for 112×112 input; `crate::builders::iresnet_layers` gives each depth's blocks).
pub fn iresnet_state_dict(layers: [usize; 4], side: usize, seed: u64) -> StateDict {
    let mut g = Gen::new(seed);
    g.conv("conv1", 64, 3, 3, 1.0);
    g.bn("bn1", 64);
    g.prelu("prelu", 64);
    let mut inplanes = 64;
    for (s, (&n, planes)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
        for blk in 0..n {
            let p = format!("layer{}.{blk}", s + 1);
            g.bn(&format!("{p}.bn1"), inplanes);
            g.conv(&format!("{p}.conv1"), planes, inplanes, 3, 1.0);
            g.bn(&format!("{p}.bn2"), planes);
            g.prelu(&format!("{p}.prelu"), planes);
            g.conv(&format!("{p}.conv2"), planes, planes, 3, 0.3);
            g.bn(&format!("{p}.bn3"), planes);
            if blk == 0 {
                g.conv(&format!("{p}.downsample.0"), planes, inplanes, 1, 1.0);
                g.bn(&format!("{p}.downsample.1"), planes);
            }
            inplanes = planes;
        }
    }
    g.bn("bn2", 512);
    let fin = 512 * side * side;
    g.conv("fc", 512, fin, 1, 1.0);
    g.sd.tensors.last_mut().unwrap().1.shape = vec![512, fin];
    g.put("fc.bias", &[512], -0.1, 0.1);
    g.bn("features", 512);
    g.sd
}

fn conv_block(g: &mut Gen, p: &str, o: usize, i: usize, k: usize, prelu: bool) {
    g.conv(&format!("{p}.layers.0"), o, i, k, 1.0);
    g.bn(&format!("{p}.layers.1"), o);
    if prelu {
        g.prelu(&format!("{p}.layers.2"), o);
    }
}

fn depthwise(g: &mut Gen, p: &str, i: usize, o: usize, groups: usize) {
    conv_block(g, &format!("{p}.layers.0"), groups, i, 1, true);
    conv_block(g, &format!("{p}.layers.1"), groups, 1, 3, true);
    conv_block(g, &format!("{p}.layers.2"), o, groups, 1, false);
}

/// arcface_torch `MobileFaceNet(blocks, scale)` with a `gdc`×`gdc` global depthwise kernel
/// (7 for 112×112 input; its `get_mbf` is blocks (1, 4, 6, 2), scale 2).
pub fn mobilefacenet_state_dict(
    blocks: [usize; 4],
    scale: usize,
    gdc: usize,
    seed: u64,
) -> StateDict {
    let mut g = Gen::new(seed);
    let (c1, c2) = (64 * scale, 128 * scale);
    conv_block(&mut g, "layers.0", c1, 3, 3, true);
    if blocks[0] == 1 {
        conv_block(&mut g, "layers.1", c1, c1 / 64, 3, true);
    } else {
        for j in 0..blocks[0] {
            depthwise(&mut g, &format!("layers.1.layers.{j}"), c1, c1, 128);
        }
    }
    depthwise(&mut g, "layers.2", c1, c1, 128);
    for j in 0..blocks[1] {
        depthwise(&mut g, &format!("layers.3.layers.{j}"), c1, c1, 128);
    }
    depthwise(&mut g, "layers.4", c1, c2, 256);
    for j in 0..blocks[2] {
        depthwise(&mut g, &format!("layers.5.layers.{j}"), c2, c2, 256);
    }
    depthwise(&mut g, "layers.6", c2, c2, 512);
    for j in 0..blocks[3] {
        depthwise(&mut g, &format!("layers.7.layers.{j}"), c2, c2, 256);
    }
    conv_block(&mut g, "conv_sep", 512, c2, 1, true);
    g.conv("features.layers.0.layers.0", 512, 1, gdc, 1.0);
    g.bn("features.layers.0.layers.1", 512);
    g.conv("features.layers.2", 512, 512, 1, 1.0);
    g.sd.tensors.last_mut().unwrap().1.shape = vec![512, 512];
    g.bn("features.layers.3", 512);
    g.sd
}
