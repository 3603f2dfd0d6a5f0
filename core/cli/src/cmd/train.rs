//! `spn train`: a new run, a resumed one (`--resume`) or a fine-tuning one (`--init`).
use crate::io::{check_out_file_named, print_json};
use crate::progress::bar;
use anyhow::{bail, Result};
use indicatif::ProgressBar;
use spn::train::{TrainOptions, Trainer};
use spn::PipelineConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The library's defaults, shown by clap.
fn d() -> TrainOptions {
    TrainOptions::new(PathBuf::new(), PathBuf::new(), 1)
}

/// Train a model (or continue one with --resume) on a folder of images (sub-folders included).
#[derive(clap::Args)]
pub struct Args {
    /// A folder of training images, sub-folders included; give --data again to train on several at once.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    steps: u64,
    #[arg(long)]
    out: PathBuf,
    /// Continue from OUT.ckpt with its saved settings; --steps, --until, --stages, --flip, --backgrounds,
    /// --checkpoint-every and the settings given again here replace them (not --heldout-percent or --ema).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = d().batch_size)]
    batch_size: i64,
    /// Peak learning rate.
    #[arg(long, default_value_t = d().lr)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = d().warmup)]
    warmup: u64,
    /// Global gradient-norm clip, 0: off.
    #[arg(long, default_value_t = d().clip)]
    clip: f64,
    /// EMA decay of the written weights, e.g. 0.999 (none: the raw weights).
    #[arg(long)]
    ema: Option<f64>,
    #[arg(long, default_value_t = d().checkpoint_every)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
    /// Percent of files (by name hash) held out from training.
    #[arg(long, default_value_t = d().heldout_percent)]
    heldout_percent: u32,
    /// Stages to train, e.g. "a" or "b,c" (default: all).
    #[arg(long, value_delimiter = ',')]
    stages: Vec<String>,
    /// Held-out images evaluated exactly at the end.
    #[arg(long, default_value_t = d().eval_images)]
    eval_images: usize,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
    /// Data-parallel runs: ranks other than 0 also write OUT.rankN at the end.
    #[arg(long)]
    save_every_rank: bool,
    /// Mirror training examples left-right at random (augmentation for small data sets).
    #[arg(long)]
    flip: bool,
    /// The share of examples (0 to 1) composited over a random flat colour or gradient instead of white,
    /// some without their subject: for upscaling and completion of canvases that are not on white. Needs
    /// images with alpha (`spn data --keep-alpha`). On resume, given again or off like --flip.
    #[arg(long, default_value_t = d().backgrounds)]
    backgrounds: f64,
    /// Stop at this step with a checkpoint, the schedule still set by --steps (a run in phases; resume
    /// with the next phase's settings).
    #[arg(long)]
    until: Option<u64>,
    /// Start from this bundle's weights and config (fine-tuning on new data) instead of a fresh init.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// A new run of --preset/--config starts from this bundle's weights wherever a weight's name and shape
    /// match (e.g. a 64x64 model for a 256x256 preset of the same widths); the others start fresh.
    #[arg(long, conflicts_with_all = ["resume", "init"])]
    warm_start: Option<PathBuf>,
    /// Start a new run even if OUT exists (it is replaced when the first checkpoint is written).
    #[arg(long)]
    force: bool,
}

impl Args {
    fn options(self, given: Vec<String>) -> TrainOptions {
        let mut data = self.data.into_iter();
        let first = data.next().unwrap_or_default();
        let mut o = TrainOptions::new(first, self.out, self.steps);
        o.more_data = data.collect();
        o.batch_size = self.batch_size;
        o.lr = self.lr;
        o.warmup = self.warmup;
        o.clip = self.clip;
        o.ema = self.ema;
        o.checkpoint_every = self.checkpoint_every;
        o.seed = self.seed;
        o.heldout_percent = self.heldout_percent;
        o.stages = self.stages;
        o.eval_images = self.eval_images;
        o.save_every_rank = self.save_every_rank;
        o.flip = self.flip;
        o.backgrounds = self.backgrounds;
        o.until = self.until;
        o.init = self.init;
        o.warm_start = self.warm_start;
        o.overwrite = self.force;
        o.given = given;
        o
    }
}

pub fn run(a: Args, given: Vec<String>, device: tch::Device) -> Result<()> {
    let config = match (&a.preset, &a.config) {
        (Some(p), _) => Some(PipelineConfig::preset(p)?),
        (None, Some(f)) => Some(PipelineConfig::from_file(f)?),
        (None, None) if a.resume || a.init.is_some() => None,
        (None, None) => bail!(
            "give --preset NAME or --config FILE (presets: {})",
            PipelineConfig::PRESETS.join(", ")
        ),
    };
    check_out_file_named(&a.out, "bundle")?;
    let (resume, json, steps, out) = (a.resume, a.json, a.steps, a.out.clone());
    let dist = spn::dist::Dist::from_env()?;
    let rank = dist.as_ref().map_or(0, |d| d.rank);
    let mut trainer = Trainer::new(config, a.options(given), resume, device, dist)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let _ = ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed));
    let pb = if rank == 0 {
        bar(steps, "train")
    } else {
        ProgressBar::hidden()
    };
    pb.set_position(trainer.step());
    let mut avg: Option<f64> = None;
    let report = trainer.run(&stop, |p| {
        let a = avg.map_or(p.bits_per_dim, |a| 0.98 * a + 0.02 * p.bits_per_dim);
        avg = Some(a);
        pb.set_position(p.step);
        pb.set_message(format!(
            "train {a:.3} bits/dim {:.1} img/s",
            p.images_per_sec
        ));
    })?;
    pb.finish_and_clear();
    if json {
        return print_json(&report);
    }
    if report.last_bits_per_dim.is_none() && !report.interrupted {
        println!("already at step {}: nothing to train", report.steps);
        return Ok(());
    }
    println!(
        "{} steps, {:.1} images/s, last batch {:.4} bits/dim{}{}",
        report.steps,
        report.images_per_sec,
        report.last_bits_per_dim.unwrap_or(f64::NAN),
        report
            .heldout_bits_per_dim
            .map(|b| format!(", held-out {b:.4} bits/dim"))
            .unwrap_or_default(),
        if report.interrupted {
            " (interrupted: resume with --resume)"
        } else {
            ""
        }
    );
    if rank == 0 {
        println!("wrote {}", out.display());
    }
    Ok(())
}
