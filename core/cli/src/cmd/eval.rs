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
    /// Evaluate at most this many images (with --per-folder: of each folder), the first by name.
    #[arg(long)]
    limit: Option<usize>,
    /// Report each sub-folder of DATA (a style of `make data`'s sets) on its own.
    #[arg(long)]
    per_folder: bool,
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

/// One folder's report, named for `--per-folder`.
#[derive(serde::Serialize)]
struct FolderReport {
    folder: String,
    #[serde(flatten)]
    report: spn::eval::EvalReport,
}

pub fn run_eval(a: EvalArgs, device: tch::Device) -> Result<()> {
    if a.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    let model = load_pipeline(a.model, device)?;
    let folders = if a.per_folder {
        let subs = data::sub_folders(&a.data)?;
        if subs.is_empty() {
            bail!("--per-folder: {} has no sub-folders", a.data.display());
        }
        subs
    } else {
        vec![a.data.clone()]
    };
    let mut reports = Vec::new();
    for dir in &folders {
        let mut files = data::split_files(dir, a.split.into(), a.heldout_percent)?;
        if let Some(n) = a.limit {
            files.truncate(n);
        }
        if files.is_empty() {
            bail!("no images in {} ({:?} split)", dir.display(), a.split);
        }
        let pb = bar(files.len() as u64, "eval");
        let r = spn::eval::evaluate_with_progress(&model, &files, a.batch_size, |n, _| {
            pb.inc(n as u64)
        })?;
        pb.finish_and_clear();
        let name = dir
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        reports.push(FolderReport {
            folder: name,
            report: r,
        });
    }
    match (a.json, a.per_folder) {
        (true, false) => print_json(&reports[0].report),
        (true, true) => print_json(&reports),
        (false, _) => {
            for f in &reports {
                print_report(&f.folder, a.per_folder, &f.report);
            }
            Ok(())
        }
    }
}

fn print_report(folder: &str, named: bool, r: &spn::eval::EvalReport) {
    if named {
        println!("{folder}: {} images", r.images);
    } else {
        println!("{} images", r.images);
    }
    for s in &r.stages {
        println!("  stage {:<5} {:.4} bits/dim", s.stage, s.bits_per_dim);
    }
    println!("  total       {:.4} bits/dim", r.bits_per_dim);
    println!("  PNG         {:.4} bits/dim", r.png_bits_per_dim);
    println!(
        "  WebP        {:.4} bits/dim (libwebp lossless, -z 9)",
        r.webp_bits_per_dim
    );
    match r.jxl_bits_per_dim {
        Some(j) => println!("  JPEG XL     {j:.4} bits/dim (libjxl lossless, effort 9)"),
        None => println!("  JPEG XL     not measured (install cjxl: `make jxl-tools`)"),
    }
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
