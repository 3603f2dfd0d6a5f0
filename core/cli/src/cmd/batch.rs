//! `spn batch`: scripted, resumable asset generation.
use super::sample::Sampling;
use crate::io::{check_out_dir, load, model_path};
use crate::progress::{bar, cancel_on_ctrl_c};
use crate::Device;
use anyhow::Result;
use std::path::PathBuf;

/// Scripted asset generation: resumable, with DIR/manifest.jsonl (one line per image).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    count: usize,
    /// First seed; image i gets seed SEED + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    sampling: Sampling,
}

pub fn run(a: Args, device: Device) -> Result<()> {
    check_out_dir(&a.out)?;
    let path = model_path(a.model)?;
    let model = load(Some(path.clone()), &device, a.sampling.options().decoding)?;
    let pb = bar(a.count as u64, "batch");
    // Sharding across processes (torchrun-style RANK / WORLD_SIZE), no communication needed.
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let shard = (var("RANK").unwrap_or(0), var("WORLD_SIZE").unwrap_or(1));
    let n = spn::batch::run(
        &*model,
        &path,
        a.count,
        a.seed,
        &a.out,
        &a.sampling.options(),
        shard,
        &cancel_on_ctrl_c(),
        |p| {
            pb.set_position(p.images_done as u64);
            if let Some(s) = p.sampler {
                pb.set_message(format!(
                    "batch: stage {} slice {} ({}%)",
                    s.stage,
                    s.slice,
                    100 * s.done / s.total.max(1)
                ));
            }
            true
        },
    )?;
    pb.finish_and_clear();
    println!(
        "{n} new images in {} ({} requested)",
        a.out.display(),
        a.count
    );
    Ok(())
}
