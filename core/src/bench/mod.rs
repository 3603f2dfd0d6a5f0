//! Sampler benchmark: naive vs incremental decoding, and how far the sampler is from the hardware limit.
use crate::error::Result;
use crate::pipeline::Pipeline;
pub mod canvas;
pub mod upscale;

use crate::sampler::{no_progress, CancelToken, Decoding, SampleOptions, Sampler};
use serde::Serialize;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub batch_size: usize,
    pub images: usize,
    /// Which incremental decoder ran: `cpu` (tensor-free, one image group per thread) or `tensor` (the
    /// device-generic one, used on GPUs).
    pub incremental_decoder: String,
    pub threads: i64,
    /// Measured end to end (generate, all stages).
    pub incremental_ms_per_image: f64,
    /// On the CPU: the same engine with libtorch's slice embedder instead of its own plain-Rust one
    /// (`decode::embed`), measured in the same run.
    pub libtorch_embedder_ms_per_image: Option<f64>,
    /// On the CPU, depth upscaling of model-size images (stages A and B scored, stage C sampled): with the
    /// plain-Rust engine, and with libtorch's embedder and full pass (the CPU path before issue 18).
    pub upscale_depth_ms_per_image: Option<f64>,
    pub libtorch_upscale_depth_ms_per_image: Option<f64>,
    /// On the CPU, for a model file: loading it and drawing one image (batch 1), with the plain-Rust engine
    /// (`HostModel`, what libspn does) and through libtorch (`Pipeline` with libtorch's embedder).
    pub load_and_first_image_ms: Option<f64>,
    pub libtorch_load_and_first_image_ms: Option<f64>,
    pub incremental_images_per_sec: f64,
    /// A full decoder pass per pixel (the naive engine through the sampler), timed over `naive_positions`
    /// positions of every slice and scaled to the image's positions.
    pub naive_ms_per_image: f64,
    pub naive_images_per_sec: f64,
    pub naive_positions: i64,
    pub speedup: f64,
    pub gflop_per_image: f64,
    pub achieved_gflops: f64,
    pub matmul_gflops: f64,
    pub fraction_of_matmul_peak: f64,
}

/// Multiply-accumulates per image of the incremental sampler, from the config.
pub fn macs_per_image(p: &Pipeline) -> f64 {
    let mut total = 0f64;
    for net in &p.stages {
        let s = &net.spec;
        let c = &s.net;
        let d = c.channels as f64;
        let (h, w) = s.slice_hw();
        let n = (h * w) as f64;
        let slices = (s.slices() - s.first_slice) as f64;
        let l = s.levels() as f64;
        let k = c.first_kernel as f64;
        let blocks = c.decoder_blocks as f64;
        let attn = if c.attention_every > 0 {
            (c.decoder_blocks / c.attention_every) as f64
        } else {
            0.0
        };
        let embed =
            n * (s.cond_channels() as f64 * 9.0 * d + c.embed_blocks as f64 * 2.0 * 9.0 * d * d);
        let ctx = n * d * 2.0 * d * blocks;
        let per_pos = 3.0 * (k / 2.0 + 1.0).floor() * k * d
            + blocks * (d * 6.0 * 2.0 * d + d * d)
            + attn * (4.0 * d * d + 3.0 * d + n * d)
            + d * d
            + 3.0 * d * l;
        total += slices * (embed + ctx + n * per_pos);
    }
    total
}

/// GFLOP/s of a large f32 matmul on the model's device.
pub fn matmul_gflops(device: tch::Device) -> Result<f64> {
    let n = 1024i64;
    let a = Tensor::f_randn([n, n], (Kind::Float, device))?;
    let b = Tensor::f_randn([n, n], (Kind::Float, device))?;
    let _ = a.f_matmul(&b)?;
    let reps = if device.is_cuda() { 200 } else { 10 };
    let t = Instant::now();
    let mut c = a.f_matmul(&b)?;
    for _ in 1..reps {
        c = a.f_matmul(&b)?;
    }
    let _ = c.f_sum(Kind::Float)?.f_double_value(&[])?; // synchronise
    Ok(2.0 * (n * n * n) as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// Milliseconds per image of the naive engine, through the sampler like every engine: a batch generated
/// with every slice stopped after `positions` positions, scaled to the image's positions. (The slice
/// embedder's share, once per slice, is counted in full: it is small next to h*w decoder passes.)
fn naive_ms_per_image(p: &Pipeline, batch_size: usize, positions: i64) -> Result<f64> {
    let sampler = Sampler::new(
        p,
        SampleOptions {
            batch_size,
            decoding: Decoding::Naive,
            positions_per_slice: Some(positions.max(1) as usize),
            ..Default::default()
        },
    )?;
    let seeds: Vec<u64> = (0..batch_size as u64).collect();
    let t = Instant::now();
    let _ = sampler.generate(&seeds, &mut no_progress(), &CancelToken::new())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    // Each stage ran min(positions, h*w) of its h*w positions per slice; scale every stage to all of them.
    let (mut ran, mut all) = (0f64, 0f64);
    for net in &p.stages {
        let s = &net.spec;
        let (h, w) = s.slice_hw();
        let slices = (s.slices() - s.first_slice) as f64;
        ran += slices * positions.clamp(1, h * w) as f64;
        all += slices * (h * w) as f64;
    }
    Ok(ms * all / ran / batch_size as f64)
}

/// Milliseconds per image of generating `images` images (after one warm-up image).
fn incremental_ms_per_image(sampler: &Sampler, images: usize) -> Result<f64> {
    let _ = sampler.generate(&[0], &mut no_progress(), &CancelToken::new())?;
    let seeds: Vec<u64> = (1..=images as u64).collect();
    let t = Instant::now();
    let _ = sampler.generate(&seeds, &mut no_progress(), &CancelToken::new())?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / images as f64)
}

/// Milliseconds per image of upscaling the depth of `images` model-size images (a fixed gradient).
fn upscale_depth_ms_per_image(sampler: &Sampler, images: usize) -> Result<f64> {
    let c = sampler.config();
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
        c.width as u32,
        c.height as u32,
        |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]),
    ));
    let job = crate::sampler::CanvasJob::UpscaleDepth { image: &img };
    let seeds: Vec<u64> = (1..=images as u64).collect();
    let t = Instant::now();
    let _ = sampler.canvas(&job, &seeds, &mut no_progress(), &CancelToken::new())?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / images as f64)
}

/// Milliseconds to load the model at `path` and draw one image: with the plain-Rust engine, and through
/// libtorch with its embedder and full pass.
fn load_and_first_image_ms(path: &std::path::Path) -> Result<(f64, f64)> {
    let first = |model: &dyn crate::Network, host_embedder| -> Result<()> {
        let options = SampleOptions {
            batch_size: 1,
            host_embedder,
            ..Default::default()
        };
        let _ = Sampler::new(model, options)?.generate(
            &[0],
            &mut no_progress(),
            &CancelToken::new(),
        )?;
        Ok(())
    };
    let t = Instant::now();
    first(&crate::HostModel::load(path)?, true)?;
    let host = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    first(&Pipeline::load(path, tch::Device::Cpu)?, false)?;
    Ok((host, t.elapsed().as_secs_f64() * 1e3))
}

/// Generation and, for a pipeline, depth upscaling, in ms per image: with `sampler`, and on the CPU also with
/// libtorch's embedder and full pass. On the CPU the two are timed in turn, three times each, and each keeps
/// its best: on a shared machine that compares them, not the moments they ran in.
/// Milliseconds per image from [`in_turn`].
struct InTurn {
    generate: f64,
    generate_libtorch: Option<f64>,
    depth: Option<f64>,
    depth_libtorch: Option<f64>,
}

fn in_turn(p: &Pipeline, sampler: &Sampler, batch_size: usize, images: usize) -> Result<InTurn> {
    let cpu = p.device() == tch::Device::Cpu;
    let other = Sampler::new(
        p,
        SampleOptions {
            batch_size,
            host_embedder: false,
            ..Default::default()
        },
    )?;
    let best = |f: &dyn Fn(&Sampler) -> Result<f64>| -> Result<(f64, Option<f64>)> {
        let (mut a, mut b) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..if cpu { 3 } else { 1 } {
            a = a.min(f(sampler)?);
            if cpu {
                b = b.min(f(&other)?);
            }
        }
        Ok((a, cpu.then_some(b)))
    };
    let (inc, inc_libtorch) = best(&|s| incremental_ms_per_image(s, images))?;
    let (depth, depth_libtorch) = match cpu && p.config.msb_bits.is_some() {
        true => {
            let (a, b) = best(&|s| upscale_depth_ms_per_image(s, images))?;
            (Some(a), b)
        }
        false => (None, None),
    };
    Ok(InTurn {
        generate: inc,
        generate_libtorch: inc_libtorch,
        depth,
        depth_libtorch,
    })
}

/// `path`: the model's file, when it came from one (for the load time).
pub fn run(
    p: &Pipeline,
    model: &str,
    path: Option<&std::path::Path>,
    batch_size: usize,
    images: usize,
    naive_positions: i64,
) -> Result<BenchReport> {
    tch::no_grad(|| {
        let dev = p.device();
        let sampler = Sampler::new(
            p,
            SampleOptions {
                batch_size,
                ..Default::default()
            },
        )?;
        let cpu = dev == tch::Device::Cpu;
        let t = in_turn(p, &sampler, batch_size, images)?;
        let (inc_ms, libtorch_embedder_ms, depth_ms, libtorch_depth_ms) =
            (t.generate, t.generate_libtorch, t.depth, t.depth_libtorch);
        let (load_ms, libtorch_load_ms) = match path.filter(|_| cpu) {
            Some(f) => {
                let (a, b) = load_and_first_image_ms(f)?;
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        // Naive: the same sampler with the naive engine, on a sample of positions of every slice.
        let naive_ms = naive_ms_per_image(p, batch_size, naive_positions)?;
        let gflop = 2.0 * macs_per_image(p) / 1e9;
        let peak = matmul_gflops(dev)?;
        let achieved = gflop / (inc_ms / 1e3);
        Ok(BenchReport {
            model: model.to_string(),
            device: format!("{dev:?}"),
            batch_size,
            images,
            incremental_decoder: sampler.decoder_name().into(),
            threads: tch::get_num_threads() as i64,
            incremental_ms_per_image: inc_ms,
            libtorch_embedder_ms_per_image: libtorch_embedder_ms,
            upscale_depth_ms_per_image: depth_ms,
            libtorch_upscale_depth_ms_per_image: libtorch_depth_ms,
            load_and_first_image_ms: load_ms,
            libtorch_load_and_first_image_ms: libtorch_load_ms,
            incremental_images_per_sec: 1e3 / inc_ms,
            naive_ms_per_image: naive_ms,
            naive_images_per_sec: 1e3 / naive_ms,
            naive_positions,
            speedup: naive_ms / inc_ms,
            gflop_per_image: gflop,
            achieved_gflops: achieved,
            matmul_gflops: peak,
            fraction_of_matmul_peak: achieved / peak,
        })
    })
}
