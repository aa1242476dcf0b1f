//! How fast a device reads and writes activations through each path a kernel could use, with
//! the same per-lane addresses (each lane its own pixel, as in the float convolutions' input
//! reads): a storage buffer of vec4 words (what every engine kernel reads now), an
//! rgba32float texture's `textureLoad`, a uniform buffer (at most 64 KiB: a window of 4,096
//! words), a storage read whose address is the same for every lane, no read at all (the loop's
//! own cost), and writes to a storage buffer against `textureStore`. On llvmpipe a storage
//! read or write is a loop over the lanes; this measures which other path would pay before any
//! kernel is rewritten.
//!
//! ```sh
//! cargo run --release -p efq-engine --example read_paths -- [READS_PER_LANE] [RUNS]
//! VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json cargo run … # on SwiftShader
//! ```

use std::time::Instant;

use efq_engine::{GpuOptions, request_blocking};
use wgpu::util::DeviceExt;

const WIDTH: u32 = 1024; // texels per texture row
const ROWS: u32 = 256; // 256 Ki vec4 words (4 MiB), like a 160×160×40 activation
const LANES: u32 = 64 * 1024;

/// What each MODE of the shader does, as printed.
const PATHS: [&str; 7] = [
    "storage read",
    "textureLoad",
    "uniform read",
    "storage, one address",
    "no read",
    "storage write",
    "textureStore",
];

const SHADER: &str = r#"
override READS: u32 = 64u;
override MODE: u32 = 0u; // an index into PATHS
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var t: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> u: array<vec4<f32>, 4096>;
@group(0) @binding(4) var ot: texture_storage_2d<rgba32float, write>;
@group(0) @binding(5) var<storage, read_write> big: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    // Consecutive lanes read consecutive words, each step a different row of words: the
    // pattern of a block convolution's input reads (one pixel per lane).
    for (var k = 0u; k < READS; k++) {
        let i = (gid.x + k * 4099u) & 262143u; // WIDTH × ROWS words, a power of two
        if MODE == 0u {
            acc += x[i];
        } else if MODE == 1u {
            acc += textureLoad(t, vec2<u32>(i & 1023u, i >> 10u), 0);
        } else if MODE == 2u {
            acc += u[i & 4095u];
        } else if MODE == 3u {
            acc += x[(k * 4099u) & 262143u]; // the same word for every lane
        } else if MODE == 4u {
            acc += vec4<f32>(f32(i));
        } else if MODE == 5u {
            big[i] = vec4<f32>(f32(k));
        } else {
            textureStore(ot, vec2<u32>(i & 1023u, i >> 10u), vec4<f32>(f32(k)));
        }
    }
    y[gid.x] = acc;
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let reads: u32 = args.next().map_or(Ok(64), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let gpu = request_blocking(&GpuOptions::default())?;
    let (device, queue) = (gpu.device(), gpu.queue());
    let words = (WIDTH * ROWS) as usize;
    let data: Vec<f32> = (0..words * 4).map(|i| (i % 97) as f32 / 97.0).collect();
    let x = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("x"),
        contents: bytemuck::cast_slice(&data),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let size = wgpu::Extent3d {
        width: WIDTH,
        height: ROWS,
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("t"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        bytemuck::cast_slice(&data),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(WIDTH * 16),
            rows_per_image: Some(ROWS),
        },
        size,
    );
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    let otex = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("ot"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::STORAGE_BINDING,
        view_formats: &[],
    });
    let oview = otex.create_view(&wgpu::TextureViewDescriptor::default());
    let big = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("big"),
        size: (WIDTH * ROWS) as u64 * 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let y = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("y"),
        size: LANES as u64 * 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("read_paths"),
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    println!(
        "{} ({} accesses per lane, {LANES} lanes)",
        gpu.adapter().name,
        reads
    );
    let mut results = Vec::new();
    // The uniform path reads the first 4,096 words (64 KiB, the largest binding WebGPU allows
    // by default).
    let ub = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("u"),
        contents: bytemuck::cast_slice(&data[..4096 * 4]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    for (mode, name) in PATHS.iter().enumerate() {
        let constants = [("READS", reads as f64), ("MODE", mode as f64)];
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("read_paths"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: x.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: y.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: ub.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: wgpu::BindingResource::TextureView(&oview),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: big.as_entire_binding(),
                },
            ],
        });
        let mut times = Vec::new();
        for _ in 0..runs + 1 {
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(LANES / 64, 1, 1);
            }
            let t = Instant::now();
            queue.submit([encoder.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely())?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.remove(0); // the first run compiles
        times.sort_by(f64::total_cmp);
        let ns = times[0] * 1e6 / (LANES as f64 * reads as f64);
        println!(
            "  {name:<20} median {:.2} ms, min {:.2} ms ({ns:.2} ns per vec4 access and lane)",
            times[times.len() / 2],
            times[0]
        );
        results.push(times[0]);
    }
    println!(
        "  by minimum: storage read / textureLoad {:.2}×, / uniform read {:.2}×; textureStore / storage write {:.2}×",
        results[0] / results[1],
        results[0] / results[2],
        results[6] / results[5]
    );
    Ok(())
}
