//! `spn`: training, evaluation, scoring and generation from the command line.
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use spn::data::{self, Split};
use spn::train::{TrainOptions, Trainer};
use spn::{Pipeline, PipelineConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "spn",
    version,
    about = "Subscale Pixel Networks with Multidimensional Upscaling"
)]
struct Cli {
    /// cpu, cuda, cuda:N or auto (CUDA when present).
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// More logging (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (or continue one with --resume) on a folder of images.
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, conflicts_with = "config")]
        preset: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        steps: u64,
        #[arg(long)]
        out: PathBuf,
        /// Continue from OUT.ckpt.
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 32)]
        batch_size: i64,
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        /// Global gradient-norm clip (0: off).
        #[arg(long, default_value_t = 1.0)]
        clip: f64,
        /// EMA decay for the written weights, e.g. 0.999.
        #[arg(long)]
        ema: Option<f64>,
        #[arg(long, default_value_t = 200)]
        checkpoint_every: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Percent of files (by name hash) held out from training.
        #[arg(long, default_value_t = 5)]
        heldout_percent: u32,
        /// Stages to train, e.g. "a" or "b,c" (default: all).
        #[arg(long, value_delimiter = ',')]
        stages: Vec<String>,
        /// Held-out images evaluated exactly at the end.
        #[arg(long, default_value_t = 64)]
        eval_images: usize,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Exact bits/dim of a model on a folder of images, next to lossless PNG and WebP.
    Eval {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "all")]
        split: Split,
        #[arg(long, default_value_t = 5)]
        heldout_percent: u32,
        /// Evaluate at most this many images.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 32)]
        batch_size: i64,
        #[arg(long)]
        json: bool,
    },
    /// Bits of one image and of each of its sub-pixels.
    Score {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        json: bool,
        /// Write where the model was surprised as a PNG.
        #[arg(long)]
        heatmap: Option<PathBuf>,
    },
    /// Prepare a data set: composite every image of SRC on white and write OUT/train and OUT/heldout
    /// with the same file-name-hash split `spn train` uses.
    Data {
        #[arg(long)]
        src: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 5)]
        heldout_percent: u32,
        /// Also fit every image to SIZE x SIZE (centre crop and resize).
        #[arg(long)]
        size: Option<u32>,
    },
    /// Configs, parameter counts and training record of a model.
    Info {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn model_path(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => spn::default_model_path().context("no --model given and no bundled model found"),
    }
}

fn load(model: Option<PathBuf>, device: tch::Device) -> Result<Pipeline> {
    let path = model_path(model)?;
    Ok(Pipeline::load(&path, device)?)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let device = spn::parse_device(&cli.device)?;
    match cli.cmd {
        Cmd::Train {
            data,
            preset,
            config,
            steps,
            out,
            resume,
            batch_size,
            lr,
            warmup,
            clip,
            ema,
            checkpoint_every,
            seed,
            heldout_percent,
            stages,
            eval_images,
            json,
        } => {
            let config = match (preset, config) {
                (Some(p), _) => Some(PipelineConfig::preset(&p)?),
                (None, Some(f)) => Some(PipelineConfig::from_file(&f)?),
                (None, None) if resume => None,
                (None, None) => bail!(
                    "give --preset NAME or --config FILE (presets: {})",
                    PipelineConfig::PRESETS.join(", ")
                ),
            };
            let mut opts = TrainOptions::new(data, out.clone(), steps);
            opts.batch_size = batch_size;
            opts.lr = lr;
            opts.warmup = warmup;
            opts.clip = clip;
            opts.ema = ema;
            opts.checkpoint_every = checkpoint_every;
            opts.seed = seed;
            opts.heldout_percent = heldout_percent;
            opts.stages = stages;
            opts.eval_images = eval_images;
            let mut trainer = Trainer::new(config, opts, resume, device)?;
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let _ = ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed));
            let pb = bar(steps, "train");
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
                print_json(&report)?;
            } else {
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
                println!("wrote {}", out.display());
            }
        }
        Cmd::Eval {
            model,
            data,
            split,
            heldout_percent,
            limit,
            batch_size,
            json,
        } => {
            let model = load(model, device)?;
            let mut files = data::split_files(&data, split, heldout_percent)?;
            if let Some(n) = limit {
                files.truncate(n);
            }
            if files.is_empty() {
                bail!("no images in {} ({split:?} split)", data.display());
            }
            let pb = bar(files.len() as u64, "eval");
            let r = spn::eval::evaluate_with_progress(&model, &files, batch_size, |n, _| {
                pb.inc(n as u64)
            })?;
            pb.finish_and_clear();
            if json {
                print_json(&r)?;
            } else {
                println!("{} images", r.images);
                for s in &r.stages {
                    println!("  stage {:<5} {:.4} bits/dim", s.stage, s.bits_per_dim);
                }
                println!("  total       {:.4} bits/dim", r.bits_per_dim);
                println!("  PNG         {:.4} bits/dim", r.png_bits_per_dim);
                println!("  WebP        {:.4} bits/dim", r.webp_bits_per_dim);
            }
        }
        Cmd::Score {
            model,
            image,
            json,
            heatmap,
        } => {
            let model = load(model, device)?;
            let img = data::load_rgb(&image)?;
            let r = spn::eval::score(&model, &img)?;
            if let Some(h) = heatmap {
                data::save_png(&spn::eval::heatmap(&r), &h)?;
            }
            if json {
                print_json(&r)?;
            } else {
                println!("{:.1} bits ({:.4} bits/dim)", r.total_bits, r.bits_per_dim);
                for s in &r.stages {
                    println!("  stage {:<5} {:.4} bits/dim", s.stage, s.bits_per_dim);
                }
            }
        }
        Cmd::Data {
            src,
            out,
            heldout_percent,
            size,
        } => {
            let files = data::list_images(&src)?;
            if files.is_empty() {
                bail!("no images in {}", src.display());
            }
            let pb = bar(files.len() as u64, "data");
            let (mut tr, mut ho) = (0, 0);
            for f in &files {
                let mut img = data::load_rgb(f)?;
                if let Some(n) = size {
                    img = data::fit(img, n, n);
                }
                let held = data::is_heldout(f, heldout_percent);
                let dir = out.join(if held { "heldout" } else { "train" });
                let name = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                data::save_png(&img, &dir.join(format!("{name}.png")))?;
                if held {
                    ho += 1
                } else {
                    tr += 1
                }
                pb.inc(1);
            }
            pb.finish_and_clear();
            println!(
                "{tr} training and {ho} held-out images in {}",
                out.display()
            );
        }
        Cmd::Info { model, json } => {
            let path = model_path(model)?;
            let model = Pipeline::load(&path, tch::Device::Cpu)?;
            let stages: Vec<serde_json::Value> = model
                .specs()
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "stage": s.kind.name(), "kind": s.kind, "height": s.height, "width": s.width,
                        "scale": s.scale, "bits": s.bits, "parameters": model.parameter_count(Some(s.kind.name())),
                        "net": s.net,
                    })
                })
                .collect();
            let v = serde_json::json!({
                "path": path, "format_version": spn::bundle::FORMAT_VERSION, "config": model.config,
                "parameters": model.parameter_count(None), "stages": stages, "training": model.info,
            });
            if json {
                print_json(&v)?;
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
    }
    Ok(())
}
