//! `spn eval` (exact bits/dim of a data set next to lossless codecs) and `spn score` (one image).
use crate::io::{check_out_file, load_pipeline, print_json};
use crate::progress::bar;
use anyhow::{bail, Result};
use spn::data::{self, Split};
use std::path::PathBuf;

/// Exact bits/dim of a model on a folder of images (sub-folders included), next to lossless PNG, WebP and
/// JPEG XL.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "all")]
    split: SplitArg,
    #[arg(long, default_value_t = 5)]
    heldout_percent: u32,
    /// Evaluate at most this many images.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: i64,
    #[arg(long)]
    json: bool,
}

/// The library's `Split` as a command-line value.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SplitArg {
    All,
    Train,
    Heldout,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::All => Split::All,
            SplitArg::Train => Split::Train,
            SplitArg::Heldout => Split::Heldout,
        }
    }
}

pub fn run_eval(a: EvalArgs, device: tch::Device) -> Result<()> {
    if a.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    let model = load_pipeline(a.model, device)?;
    let mut files = data::split_files(&a.data, a.split.into(), a.heldout_percent)?;
    if let Some(n) = a.limit {
        files.truncate(n);
    }
    if files.is_empty() {
        bail!("no images in {} ({:?} split)", a.data.display(), a.split);
    }
    let pb = bar(files.len() as u64, "eval");
    let r =
        spn::eval::evaluate_with_progress(&model, &files, a.batch_size, |n, _| pb.inc(n as u64))?;
    pb.finish_and_clear();
    if a.json {
        return print_json(&r);
    }
    println!("{} images", r.images);
    for s in &r.stages {
        println!("  stage {:<5} {:.4} bits/dim", s.stage, s.bits_per_dim);
    }
    println!("  total       {:.4} bits/dim", r.bits_per_dim);
    println!("  PNG         {:.4} bits/dim", r.png_bits_per_dim);
    println!(
        "  WebP        {:.4} bits/dim (libwebp lossless, -z 9)",
        r.webp_bits_per_dim
    );
    Ok(())
}

/// Bits of one image and of each of its sub-pixels.
#[derive(clap::Args)]
pub struct ScoreArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    json: bool,
    /// Write where the model was surprised as a PNG.
    #[arg(long)]
    heatmap: Option<PathBuf>,
}

pub fn run_score(a: ScoreArgs, device: tch::Device) -> Result<()> {
    if let Some(h) = &a.heatmap {
        check_out_file(h)?;
    }
    let model = load_pipeline(a.model, device)?;
    let img = data::load_rgb(&a.image)?;
    let r = spn::eval::score(&model, &img)?;
    if let Some(h) = a.heatmap {
        data::save_image(&spn::eval::heatmap(&r), &h)?;
    }
    if a.json {
        return print_json(&r);
    }
    println!("{:.1} bits ({:.4} bits/dim)", r.total_bits, r.bits_per_dim);
    for s in &r.stages {
        println!("  stage {:<5} {:.4} bits/dim", s.stage, s.bits_per_dim);
    }
    Ok(())
}
