//! `spn bench`: the engines' speed through the sampler, and FLOPs against the machine's matmul rate.
use crate::io::{model_path, print_json};
use anyhow::{bail, Result};
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
}

pub fn run(a: Args, device: tch::Device) -> Result<()> {
    if a.batch_size == 0 || a.images == Some(0) {
        bail!("--batch-size and --images must be at least 1");
    }
    let (pipeline, name) = match a.preset {
        Some(p) => {
            tch::manual_seed(0);
            (
                Pipeline::new(PipelineConfig::preset(&p)?, device)?,
                format!("preset {p}"),
            )
        }
        None => {
            let path = model_path(a.model)?;
            (Pipeline::load(&path, device)?, path.display().to_string())
        }
    };
    let r = spn::bench::run(
        &pipeline,
        &name,
        a.batch_size,
        a.images.unwrap_or(a.batch_size),
        a.naive_positions,
    )?;
    if a.json {
        return print_json(&r);
    }
    println!(
        "{} on {} ({} threads) at batch {}",
        r.model, r.device, r.threads, r.batch_size
    );
    println!(
        "  incremental {:>10.1} ms/image {:>8.2} images/s ({} engine)",
        r.incremental_ms_per_image, r.incremental_images_per_sec, r.incremental_decoder
    );
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
    Ok(())
}
