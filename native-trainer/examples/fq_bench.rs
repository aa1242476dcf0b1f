//! Element-wise costs inside the student's training step, on one activation of `[NB, 64, 56,
//! 56]` (channels-last, 2 threads): libtorch's fused fake-quantization against the vectorised
//! straight-through form `student.rs` uses, next to a 1×1 and a depthwise convolution and the
//! PReLU for scale. Prints forward without and with a graph, and forward + backward.
//!
//! `NB=64 cargo run --release -p efq-trainer --example fq_bench`
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn bench(name: &str, f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) {
    let reps = (5 * 64 / x.size()[0]).max(1);
    let _ = f(x);
    let time = |body: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..reps {
            body();
        }
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    let xg = x.detach().set_requires_grad(true);
    let g = f(&x.detach()).randn_like();
    let fwd = time(&|| {
        let _ = tch::no_grad(|| f(x));
    });
    let fwd_graph = time(&|| {
        let _ = f(&xg);
    });
    let fwd_bwd = time(&|| (f(&xg) * &g).sum(Kind::Float).backward());
    println!("{name:28} fwd {fwd:7.1} ms  fwd(graph) {fwd_graph:7.1} ms  fwd+bwd {fwd_bwd:7.1} ms");
}

fn channels_last(t: Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

fn main() {
    efq_trainer::memory::keep_freed_memory();
    tch::set_num_threads(2);
    let nb: i64 = std::env::var("NB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let x = channels_last(Tensor::randn([nb, 64, 56, 56], (Kind::Float, Device::Cpu)) * 2.0);
    let (s, q) = (0.05f64, 31i64);
    let qf = q as f64;
    bench(
        "fused fake_quantize",
        &|x| x.fake_quantize_per_tensor_affine(s, 0, -q, q),
        &x,
    );
    bench(
        "clamp + detached delta",
        &|x| {
            let c = x.clamp(-qf * s, qf * s);
            let d = tch::no_grad(|| {
                let mut d = &c * (1.0 / s);
                let _ = d.round_();
                let _ = d.clamp_(-qf, qf);
                let _ = d.g_mul_scalar_(s);
                let _ = d.g_sub_(&c);
                d
            });
            c + d
        },
        &x,
    );
    let w = channels_last(Tensor::randn([128, 64, 1, 1], (Kind::Float, Device::Cpu)));
    bench(
        "conv 1x1 64->128",
        &|x| x.conv2d::<&Tensor>(&w, None, [1, 1], [0, 0], [1, 1], 1),
        &x,
    );
    let wd = channels_last(Tensor::randn([64, 1, 3, 3], (Kind::Float, Device::Cpu)));
    bench(
        "depthwise conv 3x3",
        &|x| x.conv2d::<&Tensor>(&wd, None, [1, 1], [1, 1], [1, 1], 64),
        &x,
    );
    let slope = (Tensor::ones([64], (Kind::Float, Device::Cpu)) * 0.25).set_requires_grad(true);
    bench("prelu", &|x| x.prelu(&slope), &x);
    bench("relu", &|x| x.relu(), &x);
}
