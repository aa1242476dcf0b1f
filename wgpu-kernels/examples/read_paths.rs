//! How fast a device reads activations through each path a kernel could use: a storage buffer
//! of vec4 words (what every engine kernel reads now) against an rgba32float texture's
//! `textureLoad`, with the same per-lane addresses (each lane its own pixel, as in the float
//! convolutions' input reads). On llvmpipe a storage read is a loop over the lanes while a
//! texel fetch may be a vector gather; this measures whether moving activations into textures
//! would pay before any kernel is rewritten.
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

const SHADER: &str = r#"
override READS: u32 = 64u;
override TEXTURE: bool = false;
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var t: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    // Consecutive lanes read consecutive words, each step a different row of words: the
    // pattern of a block convolution's input reads (one pixel per lane).
    for (var k = 0u; k < READS; k++) {
        let i = (gid.x + k * 4099u) & 262143u; // WIDTH × ROWS words, a power of two
        if TEXTURE {
            acc += textureLoad(t, vec2<u32>(i & 1023u, i >> 10u), 0);
        } else {
            acc += x[i];
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
        "{} ({} reads per lane, {LANES} lanes)",
        gpu.adapter().name,
        reads
    );
    let mut results = Vec::new();
    for texture_path in [false, true] {
        let constants = [
            ("READS", reads as f64),
            ("TEXTURE", texture_path as u32 as f64),
        ];
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
        let name = if texture_path {
            "textureLoad"
        } else {
            "storage"
        };
        let ns = times[0] * 1e6 / (LANES as f64 * reads as f64);
        println!(
            "  {name:<12} median {:.2} ms, min {:.2} ms ({ns:.2} ns per vec4 read and lane)",
            times[times.len() / 2],
            times[0]
        );
        results.push(times[0]);
    }
    println!(
        "  storage / textureLoad (min): {:.2}×",
        results[0] / results[1]
    );
    Ok(())
}
