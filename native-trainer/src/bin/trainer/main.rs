//! `trainer`: turns a full-precision face-recognition teacher into a low-bit student
//! (Ef-QuantFace) and evaluates both.
//!
//! `main` only parses and dispatches; each subcommand is a module here with its arguments and
//! its `run`, over the library's work (`efq_trainer`).

mod bench;
mod common;
mod config_file;
mod convert;
mod embed;
mod eval;
mod finetune;
mod gallery;
mod generate;
mod inspect;
mod prune;
mod quantize;
mod reconstruct;
mod roc;
mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Ef-QuantFace trainer: import a face-recognition teacher, quantize it, evaluate it",
    long_about = "Ef-QuantFace trainer.\n\n\
        Models are InsightFace ONNX files (float teachers such as w600k_mbf.onnx) or packed\n\
        EfQuantFace files (.efq, safetensors with a manifest). Data is LFW: a folder of aligned\n\
        112×112 crops with one sub-folder per person, and the standard pairs.txt.\n\n\
        Without a flag, files are found where scripts/setup.sh puts them, whatever the working\n\
        directory; an environment variable overrides each default, a flag overrides both:\n  \
        EFQ_TEACHER   the teacher (--model, --teacher): $EFQ_CACHE/models/w600k_mbf.onnx\n  \
        EFQ_DETECTOR  the face detector (--detector): $EFQ_CACHE/models/scrfd_500m_bnkps.onnx\n  \
        EFQ_CACHE     the set-up cache: ~/.cache/efquantface\n  \
        EFQ_LFW       the LFW folder (--lfw): shared/data/lfw beside this checkout\n\n\
        The recipe is the default. Options whose alternatives did not improve results are listed\n\
        under their own \"Experiments\" heading in a subcommand's --help (not in -h).\n\n\
        `trainer finetune --config FILE.toml` reads options from a file: its keys are the long\n\
        option names (e.g. `lr = 0.001`, `loss = \"ekd\"`, `positives = \"views\"`); options on the\n\
        command line win. The effective configuration is saved as config.json in --out-dir.",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conventions: efq_trainer::conventions::ConventionArgs,
    /// CPU threads for libtorch and the CPU backend [default: every core]. libtorch's threads
    /// wait for each other passively (unless OMP_WAIT_POLICY says otherwise), so cores shared
    /// with other processes slow it down little (docs/EXPERIMENTS.md, Part 5, "the OpenMP wait policy").
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a model on LFW: 10-fold accuracy, all-pairs TAR at low FAR, ROC plot.
    #[command(long_about = "Evaluate a model on LFW.\n\n\
        Embeds every crop of --crops (with and without the flip test), then reports\n\
        - InsightFace's 10-fold accuracy on pairs.txt (squared-L2 thresholds 0..4 step 0.01),\n\
        - ROC AUC of the pairs,\n\
        - TAR at FAR 1e-2 … 1e-6 over ALL pairs of the folder (29.6M impostor pairs on the\n  \
          7,701 standard test crops), where quantized models actually differ,\n\
        - with --teacher, the mean and 1st-percentile cosine of each embedding to the teacher's.\n\
        Writes report.json and roc.png into --out.\n\n\
        Example: trainer eval --model student.efq --teacher w600k_mbf.onnx --json")]
    Eval(eval::EvalCmd),
    /// Quantize a float teacher into a packed low-bit student (post-training quantization).
    #[command(
        long_about = "Quantize a float teacher into a packed low-bit student.\n\n\
        Weights: symmetric per output channel at --bits' w width; activations: per tensor at\n\
        its a width, ranges calibrated on --calib-images training crops (by default the\n\
        clipping point with the least squared error at that width; below 8 bits the levels\n\
        may also be split unevenly around zero, --act-grid). Before calibrating,\n\
        the channels in front of grouped and depthwise layers are equalized (an exact float\n\
        rescaling; --no-equalize skips it). The first conv and the last FC stay at 8 bits\n\
        unless --all-layers. --reconstruct STEPS then fits each layer to the teacher's output\n\
        of that layer on the calibration images (~20 minutes on 2 CPU cores; at w4a4 it lifts\n\
        w600k_mbf's teacher fidelity from 0.61 to 0.83), and --reconstruct-blocks STEPS then\n\
        fits each block (a bottleneck or residual unit) as a whole to the teacher's output of\n\
        that block (0.83 to 0.89 at 600 steps; --reconstruct-drop 0.5 leaves half the\n\
        activations float during that fit, QDrop, and adds a little on unseen faces).\n\
        See docs/quantization.md.\n\n\
        Examples: trainer quantize --bits w6a6 --out out/mbf-w6a6-ptq.efq\n          \
        trainer quantize --bits w4a4 --reconstruct 200 --reconstruct-blocks 600 \\\n            \
        --reconstruct-drop 0.5 --out out/mbf-w4a4-rec.efq"
    )]
    Quantize(quantize::QuantizeCmd),
    /// Fine-tune a quantized student with distillation (EKD by default), export it, evaluate it.
    #[command(
        long_about = "Fine-tune a quantized student from the teacher (Ef-QuantFace).\n\n\
        Starts from --student-init, or quantizes the teacher at --bits first (as `quantize`).\n\
        One epoch over --train-crops, EKD loss by default, no classification head. Positive\n\
        pairs come from the identity folders (one view per image, a person's images batched\n\
        together), or, with --positives views or where no person has two images, from two\n\
        views of each image (the image and an augmented copy: no labels, twice the passes).\n\
        Checkpoints every --checkpoint-every steps into --out-dir; --resume continues from the last one.\n\
        Writes student.efq (packed weights) and, unless --no-eval, evaluates it on LFW with the\n\
        teacher's fidelity and stores the FAR = 1e-3 threshold in the model.\n\n\
        Example: trainer finetune --bits w6a6 --out-dir out/ekd-w6a6"
    )]
    Finetune(finetune::FinetuneCmd),
    /// Compare the faces of two photos or aligned crops: similarity and same/different.
    #[command(
        long_about = "Compare the faces of two photos, or two aligned 112×112 crops.\n\n\
        In a photo the face is found (SCRFD), the one nearest the centre chosen and aligned;\n\
        which face was used is printed (--json: its box, score and the number found). Both\n\
        faces are embedded with the flip test through --backend (by default the fastest\n\
        present: the wgpu engine on a hardware GPU, else a CPU path; stderr says which), and\n\
        their cosine similarity is printed with, for a packed model that stores one, the\n\
        decision at its FAR = 1e-3 threshold. Without --model it uses the teacher.\n\n\
        Example: trainer verify --model out/ekd-w6a6/student.efq photo1.jpg photo2.jpg"
    )]
    Verify(verify::VerifyCmd),
    /// Show what a model file is: graph, input conventions, bit-widths, threshold, size.
    #[command(
        long_about = "Show what a model file is, without running it: its input (size,\n\
        channel order, mean and std), its output, the graph's ops, parameters and\n\
        multiply-accumulates per image, the bit-widths of its layers, the verification\n\
        threshold it stores, its size and how it was made.\n\n\
        Examples: trainer inspect                      (the installed teacher)\n          \
        trainer inspect out/ekd-w6a6/student.efq --json"
    )]
    Inspect(inspect::InspectCmd),
    /// Write the L2-normalised embeddings of aligned face crops as JSON.
    Embed(embed::EmbedCmd),
    /// Add faces (aligned crops) to a gallery file for 1:N search.
    #[command(
        long_about = "Add faces to a gallery for 1:N search (`trainer identify`).\n\n\
        Each aligned crop is embedded with the flip test and stored under its folder's name\n\
        (`person/photo.jpg` enrolls \"person\"; NAME=PATH names it). The gallery is a\n\
        safetensors file: `embeddings` [N, dim] and the names in its metadata, readable by any\n\
        safetensors tool. It keeps the model's threshold, below which a probe is unknown.\n\n\
        Example: trainer enroll --model s.efq --gallery team.safetensors faces/"
    )]
    Enroll(gallery::EnrollCmd),
    /// Identify aligned crops against a gallery: best matches, or unknown.
    #[command(
        long_about = "Identify aligned crops against a gallery (`trainer enroll`).\n\n\
        Prints each probe's best match and the --top matches with their cosines; the answer is\n\
        the best match's name when it reaches the model's threshold, else unknown.\n\n\
        Example: trainer identify --model s.efq --gallery team.safetensors probe.jpg"
    )]
    Identify(gallery::IdentifyCmd),
    /// Measure images/s and latency of a model at several batch sizes on one backend.
    #[command(
        long_about = "Measure images/s and median batch latency of plain forward passes\n\
        on random inputs at each --batches size, on one --backend, and the peak memory of the\n\
        process. bench/engine_bench.sh runs every backend and onnxruntime side by side.\n\n\
        Example: trainer bench --model out/mbf-w8a8.efq --backend wgpu --batches 1,32,256"
    )]
    Bench(bench::BenchCmd),
    /// Draw the all-pairs ROC curves of several `eval` reports in one PNG.
    #[command(
        long_about = "Draw the all-pairs ROC curves (flip test) of several `eval` reports\n\
        in one PNG, to compare a teacher with its students at low FAR.\n\n\
        Example: trainer roc --out roc.png teacher=out/eval-t/report.json w6a6=out/eval-s/report.json"
    )]
    Roc(roc::RocCmd),
    /// Write a generated network (random weights, seeded) as InsightFace-layout ONNX or .pth.
    #[command(
        long_about = "Write a generated network with seeded random weights as ONNX, in\n\
        the layout of InsightFace's model zoo, or (for a .pth output) as the state dict\n\
        arcface_torch saves: for benchmarks and for testing the import of architectures\n\
        whose trained weights are not available here (iresnet R18–R200).\n\n\
        Examples: trainer generate --arch iresnet50 --out out/r50-random.onnx\n          \
        trainer generate --arch iresnet50 --out out/r50-random.pth"
    )]
    Generate(generate::GenerateCmd),
    /// Convert an arcface_torch checkpoint (backbone.pth) to ONNX.
    #[command(
        long_about = "Convert an arcface_torch checkpoint (backbone.pth: iresnet18–200 or\n\
        MobileFaceNet, as InsightFace's training code saves it) to the ONNX graph its\n\
        export would be, for onnxruntime or the browser page. Every other command also\n\
        takes the .pth directly wherever it takes an ONNX teacher.\n\n\
        The file is read without Python and nothing in it is executed: a pickle that asks to\n\
        run anything but the constructors of a state dict is refused.\n\n\
        Example: trainer convert backbone.pth --out r50.onnx"
    )]
    Convert(convert::ConvertCmd),
    /// Remove a fraction of a float teacher's channels (structured pruning), written as ONNX.
    #[command(
        long_about = "Structured channel pruning of a float teacher (DepGraph-style).\n\n\
        The channels that must go together are found from the graph: the inputs and output of\n\
        a residual Add, a depthwise convolution's input and output, BatchNorm and PReLU\n\
        parameters, the features a flatten hands to the FC. Each group is scored by the L2\n\
        norm of all its parameters and the lowest --sparsity of each group's channels is\n\
        removed (--scope global ranks them over the whole network instead). The image's\n\
        channels, the embedding and grouped (not depthwise) convolutions are kept whole.\n\
        The result is a smaller ONNX teacher: eval, quantize and finetune take it as any.\n\n\
        Example: trainer prune --sparsity 0.2 --out out/mbf-sp02.onnx"
    )]
    Prune(prune::PruneCmd),
    /// Detect and align faces: a folder of raw photos → 112×112 ArcFace crops.
    #[command(
        long_about = "Detect and align faces: a folder of raw photos → 112×112 ArcFace crops.\n\n\
        Every .jpg/.jpeg/.png under SRC (recursively) gets one crop at the same relative path\n\
        under DST. SCRFD (--detector) finds the faces at --det-size (retried at --retry-size\n\
        when none is found); of several faces the one nearest the photo's centre is kept; its\n\
        five keypoints are mapped onto the ArcFace template by a least-squares similarity.\n\
        Photos without a face are listed in DST/align-report.json and the summary.\n\n\
        Example: trainer align photos/ crops/"
    )]
    Align(efq_trainer::align::AlignCmd),
}

fn main() -> Result<()> {
    passive_openmp_waits();
    quiet_vulkan_probe();
    exit_quietly_on_closed_pipe();
    efq_trainer::memory::keep_freed_memory();
    let cli = Cli::parse_from(config_file::expand(std::env::args_os().collect())?);
    efq_trainer::conventions::set(cli.conventions);
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        tch::set_num_threads(n as i32);
        tch::set_num_interop_threads(n as i32);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads {n}: {e}"))?;
    }
    match cli.command {
        Command::Eval(c) => c.run(),
        Command::Quantize(c) => c.run(),
        Command::Finetune(c) => c.run(),
        Command::Verify(c) => c.run(),
        Command::Inspect(c) => c.run(),
        Command::Embed(c) => c.run(),
        Command::Bench(c) => c.run(),
        Command::Roc(c) => c.run(),
        Command::Generate(c) => c.run(),
        Command::Convert(c) => c.run(),
        Command::Enroll(c) => c.run(),
        Command::Identify(c) => c.run(),
        Command::Prune(c) => c.run(),
        Command::Align(c) => efq_trainer::align::run(&c),
    }
}

/// Mesa's Vulkan driver probes for a Wayland display and prints an error on every start when
/// `XDG_RUNTIME_DIR` is unset (headless machines have none), which `--backend auto` would show
/// on every run outside scripts/setup.sh's shell: point it at the private directory the set-up
/// uses, `/tmp/xdg-runtime-<uid>`, when that is (or can be made) ours alone.
fn quiet_vulkan_probe() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
            return;
        }
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return;
        };
        let dir = PathBuf::from(format!("/tmp/xdg-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o700);
        if ours {
            // SAFETY: first thing in `main`, before any thread exists to read the environment.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// `trainer inspect --json | head` closes the pipe early; Rust ignores SIGPIPE, so the next
/// `println!` would panic. Restore the default action: the process ends quietly, as `cat` does.
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: first thing in `main`, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// libtorch's OpenMP threads spin while they wait for each other, which is quick on idle cores
/// and ruinous on shared ones: beside other busy processes, 2 threads ran the teacher at
/// 8.6–10.0 images/s, one thread at 20–26, and 2 threads with `OMP_WAIT_POLICY=PASSIVE` at
/// 70–84 (docs/EXPERIMENTS.md, Part 5, "the OpenMP wait policy"). OpenMP reads the policy when the library loads,
/// before `main`, so the process starts itself again with it set, unless the user set one.
fn passive_openmp_waits() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("OMP_WAIT_POLICY").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // `exec` returns only if it failed; then the run goes on with OpenMP's default.
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .exec();
    }
}
