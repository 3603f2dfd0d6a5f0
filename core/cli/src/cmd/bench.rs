//! `spn bench`: the engines' speed through the sampler, and FLOPs against the machine's matmul rate.
use crate::io::{model_path, print_json};
use anyhow::{bail, Result};
use spn::sampler::Pick;
use spn::{Pipeline, PipelineConfig};
use std::path::PathBuf;

/// Naive vs incremental sampling speed, and FLOPs against the machine's matmul rate.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, conflicts_with = "preset")]
    model: Option<PathBuf>,
    /// Benchmark a named config with random weights instead of a model file.
    #[arg(long)]
    preset: Option<String>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Images generated for the incremental timing (default: one batch).
    #[arg(long)]
    images: Option<usize>,
    /// Positions per slice timed for the naive engine (every slice of every stage).
    #[arg(long, default_value_t = 16)]
    naive_positions: i64,
    #[arg(long)]
    json: bool,
    /// Time the windowed jobs instead (upscale-depth, upscale-size, completion of half the canvas) at these
    /// canvas sides, and measure the seams between windows.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "64,256,512,1024")]
    canvas: Option<Vec<u32>>,
    /// With --canvas or --upscale: pixels neighbouring windows share (default: the sampler's).
    #[arg(long)]
    overlap: Option<usize>,
    /// Size upscaling against Lanczos and Catmull-Rom from the same pixels (slice 0, or every --factor-th),
    /// in PSNR, on the images of these folders (e.g. data/styles64/heldout/noto), and flat regions of
    /// synthetic inputs.
    #[arg(long, num_args = 1..)]
    upscale: Option<Vec<PathBuf>>,
    /// With --upscale: the temperatures to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,0.7,0.5,0.3",
        requires = "upscale"
    )]
    temperatures: Vec<f64>,
    /// With --upscale: images per folder (the first by name).
    #[arg(long, default_value_t = 24, requires = "upscale")]
    limit: usize,
    /// With --upscale: the upscaling factor F, inputs being every F-th pixel (default: the model's scale S;
    /// 4 for 64x64 to 256x256 with an S = 8 model).
    #[arg(long, requires = "upscale")]
    factor: Option<u32>,
    /// With --upscale: the model takes each sub-pixel's mean level instead of drawing it.
    #[arg(long, requires = "upscale")]
    mean: bool,
    /// With --upscale: average this many draws into each upscale (`spn upscale-size --average`).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "upscale")]
    average: usize,
    /// With --upscale: write each set's first image and each synthetic input here as pictures (input, Lanczos,
    /// model, original), named SET-IMAGE-tT-WHAT.png.
    #[arg(long, requires = "upscale")]
    pictures: Option<PathBuf>,
}

pub fn run(a: Args, device: tch::Device) -> Result<()> {
    if a.batch_size == 0 || a.images == Some(0) {
        bail!("--batch-size and --images must be at least 1");
    }
    let (pipeline, name, file) = match a.preset {
        Some(p) => {
            tch::manual_seed(0);
            (
                Pipeline::new(PipelineConfig::preset(&p)?, device)?,
                format!("preset {p}"),
                None,
            )
        }
        None => {
            let path = model_path(a.model)?;
            let name = path.display().to_string();
            (Pipeline::load(&path, device)?, name, Some(path))
        }
    };
    if let Some(sets) = &a.upscale {
        let pick = if a.mean { Pick::Mean } else { Pick::Sample };
        return upscale(
            &pipeline,
            &name,
            sets,
            (
                &a.temperatures,
                (pick, a.average),
                a.limit,
                (a.factor, a.overlap),
            ),
            a.pictures.as_deref(),
            a.json,
        );
    }
    if let Some(sizes) = &a.canvas {
        return canvas(&pipeline, &name, sizes, (a.batch_size, a.overlap), a.json);
    }
    let r = spn::bench::run(
        &pipeline,
        &name,
        file.as_deref(),
        a.batch_size,
        a.images.unwrap_or(a.batch_size),
        a.naive_positions,
    )?;
    if a.json {
        return print_json(&r);
    }
    print_report(&r);
    Ok(())
}

/// The sampler benchmark as text.
fn print_report(r: &spn::bench::BenchReport) {
    println!(
        "{} on {} ({} threads) at batch {}",
        r.model, r.device, r.threads, r.batch_size
    );
    println!(
        "  incremental {:>10.1} ms/image {:>8.2} images/s ({} engine)",
        r.incremental_ms_per_image, r.incremental_images_per_sec, r.incremental_decoder
    );
    let vs = |ours: f64, libtorch: f64| 100.0 * (ours / libtorch - 1.0);
    if let Some(ms) = r.libtorch_embedder_ms_per_image {
        println!(
            "  same with libtorch's slice embedder {:>6.1} ms/image ({:+.1}% for the plain-Rust one)",
            ms,
            vs(r.incremental_ms_per_image, ms)
        );
    }
    if let (Some(a), Some(b)) = (
        r.upscale_depth_ms_per_image,
        r.libtorch_upscale_depth_ms_per_image,
    ) {
        println!(
            "  upscale-depth {a:>8.1} ms/image; with libtorch's embedder and full pass {b:.1} ({:+.1}%)",
            vs(a, b)
        );
    }
    if let (Some(a), Some(b)) = (
        r.load_and_first_image_ms,
        r.libtorch_load_and_first_image_ms,
    ) {
        println!(
            "  load + first image {a:>6.1} ms (plain Rust); through libtorch {b:.1} ms ({:+.1}%)",
            vs(a, b)
        );
    }
    println!(
        "  naive       {:>10.1} ms/image {:>8.3} images/s (timed over {} positions per slice)",
        r.naive_ms_per_image, r.naive_images_per_sec, r.naive_positions
    );
    println!("  speed-up    {:>10.1}x", r.speedup);
    println!(
        "  {:.2} GFLOP/image: {:.1} GFLOP/s achieved, {:.1} GFLOP/s matmul peak ({:.1}%)",
        r.gflop_per_image,
        r.achieved_gflops,
        r.matmul_gflops,
        100.0 * r.fraction_of_matmul_peak
    );
}

fn canvas(
    p: &Pipeline,
    name: &str,
    sizes: &[u32],
    (batch, overlap): (usize, Option<usize>),
    json: bool,
) -> Result<()> {
    let s = p.config().scale as u32;
    if sizes.is_empty() || sizes.iter().any(|&n| n == 0 || n % s != 0) {
        bail!("--canvas sizes must be positive multiples of the model's scale {s}");
    }
    let r = spn::bench::canvas::run(p, name, sizes, batch, overlap)?;
    if json {
        return print_json(&r);
    }
    println!(
        "{} on {} ({} threads) at batch {}: windowed jobs on a synthetic canvas",
        r.model, r.device, r.threads, r.batch_size
    );
    println!(
        "  {:<14} {:>6} {:>10} {:>12} {:>12}",
        "job", "side", "seconds", "ms/MP", "seam ratio"
    );
    for row in &r.rows {
        let seam = row
            .seams
            .map_or("-".to_string(), |x| format!("{:.3}", x.ratio));
        println!(
            "  {:<14} {:>6} {:>10.2} {:>12.0} {:>12}",
            row.job, row.size, row.seconds, row.ms_per_megapixel, seam
        );
    }
    for job in spn::bench::canvas::JOBS {
        let at = |n: u32| r.rows.iter().find(|x| x.job == job && x.size == n);
        if let (Some(a), Some(b)) = (at(256), at(1024)) {
            println!(
                "  {job}: per-pixel cost at 1024 is {:.2}x that at 256",
                b.ms_per_megapixel / a.ms_per_megapixel
            );
        }
    }
    Ok(())
}

fn upscale(
    p: &Pipeline,
    name: &str,
    sets: &[PathBuf],
    (temps, (pick, draws), limit, (factor, overlap)): (
        &[f64],
        (Pick, usize),
        usize,
        (Option<u32>, Option<usize>),
    ),
    pictures: Option<&std::path::Path>,
    json: bool,
) -> Result<()> {
    if limit == 0 || temps.is_empty() {
        bail!("--limit and --temperatures must not be empty");
    }
    let r = spn::bench::upscale::run(
        p,
        name,
        sets,
        (temps, pick, draws),
        (limit, factor, overlap),
        pictures,
    )?;
    if json {
        return print_json(&r);
    }
    println!(
        "{}: size upscaling x{} from every {}th pixel (scale {}, {:?}, {} draws averaged), PSNR (dB), mean over images",
        r.model, r.factor, r.factor, r.scale, pick, r.draws
    );
    println!(
        "  {:<44} {:>6} {:>5} {:>8} {:>8} {:>11}",
        "set", "images", "T", "model", "Lanczos", "Catmull-Rom"
    );
    for row in &r.psnr {
        println!(
            "  {:<44} {:>6} {:>5} {:>8.2} {:>8.2} {:>11.2}",
            row.set,
            row.images,
            row.temperature,
            row.model_psnr,
            row.lanczos_psnr,
            row.catmull_rom_psnr
        );
    }
    println!("  flat regions kept flat (share within 8 levels of the input):");
    for row in &r.flat {
        println!(
            "  {:<44} T {:>4}: {:>6.1}%",
            row.input,
            row.temperature,
            100.0 * row.flat_kept
        );
    }
    Ok(())
}
