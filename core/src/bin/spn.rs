//! `spn`: training, evaluation, scoring and generation from the command line.
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use spn::data::{self, Split};
use spn::sampler::{CancelToken, Decoding, SampleOptions, SampleProgress, Sampler};
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
        /// Continue from OUT.ckpt, with its saved settings; --steps, --stages, --flip, --checkpoint-every
        /// and the options given again here replace them (not --heldout-percent or --ema).
        #[arg(long)]
        resume: bool,
        // The options without a clap default keep their saved value on --resume unless given again.
        /// [default: 32]
        #[arg(long)]
        batch_size: Option<i64>,
        /// Peak learning rate [default: 0.002]
        #[arg(long)]
        lr: Option<f64>,
        /// Warm-up steps [default: 100]
        #[arg(long)]
        warmup: Option<u64>,
        /// Global gradient-norm clip, 0: off [default: 1]
        #[arg(long)]
        clip: Option<f64>,
        /// EMA decay for the written weights, e.g. 0.999 [default: none]
        #[arg(long)]
        ema: Option<f64>,
        #[arg(long, default_value_t = 200)]
        checkpoint_every: u64,
        /// [default: 0]
        #[arg(long)]
        seed: Option<u64>,
        /// Percent of files (by name hash) held out from training [default: 5]
        #[arg(long)]
        heldout_percent: Option<u32>,
        /// Stages to train, e.g. "a" or "b,c" (default: all).
        #[arg(long, value_delimiter = ',')]
        stages: Vec<String>,
        /// Held-out images evaluated exactly at the end [default: 64]
        #[arg(long)]
        eval_images: Option<usize>,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
        /// Data-parallel runs: ranks other than 0 also write OUT.rankN at the end.
        #[arg(long)]
        save_every_rank: bool,
        /// Mirror training examples left-right at random (augmentation for small data sets).
        #[arg(long)]
        flip: bool,
        /// Start from this bundle's weights and config (fine-tuning on new data) instead of a fresh init.
        #[arg(long, conflicts_with = "resume")]
        init: Option<PathBuf>,
        /// Start a new run even if OUT exists (it is replaced when the first checkpoint is written).
        #[arg(long)]
        force: bool,
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
    /// Prepare a data set: composite every image of SRC, and every icon of the Iconify sets rendered at
    /// SIZE, on white, and write OUT/train and OUT/heldout with the file-name-hash split `spn train` uses
    /// (icon sets in one sub-folder per style, each emoji held out in every style or in none).
    Data {
        /// A folder of images (written flat into OUT/train and OUT/heldout, or into a sub-folder).
        #[arg(long)]
        src: Option<PathBuf>,
        /// The sub-folder (style name) for the images of SRC.
        #[arg(long, requires = "src")]
        src_style: Option<String>,
        /// An Iconify JSON icon set (`icons.json` of an `@iconify-json/*` package); repeatable.
        #[arg(long)]
        iconify: Vec<PathBuf>,
        /// Name rendered emoji after the files of this folder with the same code points [default: SRC].
        #[arg(long)]
        keys_from: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 5)]
        heldout_percent: u32,
        /// Fit every image to, and render every icon at, SIZE x SIZE (centre crop and resize).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
        size: Option<u32>,
    },
    /// Generate new images: DIR/sample-SEED.png for seeds SEED..SEED+COUNT (or, for one image, --out FILE.png).
    Generate {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write all samples tiled into one PNG.
        #[arg(long)]
        grid: Option<PathBuf>,
        #[command(flatten)]
        sampling: Sampling,
    },
    /// Complete a partially drawn image: MASK is white where pixels are known (kept exactly), black or
    /// transparent where the model draws.
    Complete {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        mask: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        sampling: Sampling,
    },
    /// Upscale size: the small image becomes slice 0 of an image S times larger.
    UpscaleSize {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        sampling: Sampling,
    },
    /// Upscale depth: keep the top bits of every value, resample the low bits.
    UpscaleDepth {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        sampling: Sampling,
    },
    /// Scripted asset generation: resumable, with DIR/manifest.jsonl (one line per image).
    Batch {
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
    },
    /// Naive vs incremental sampling speed, and FLOPs against the machine's matmul rate.
    Bench {
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
        /// Positions per stage timed for the naive sampler.
        #[arg(long, default_value_t = 16)]
        naive_positions: i64,
        #[arg(long)]
        json: bool,
    },
    /// Configs, parameter counts and training record of a model.
    Info {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Clone)]
struct Sampling {
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f64,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// A full decoder pass per pixel (slow; the reference for the incremental sampler).
    #[arg(long)]
    naive: bool,
}

impl Sampling {
    fn options(&self) -> SampleOptions {
        SampleOptions {
            temperature: self.temperature,
            batch_size: self.batch_size,
            decoding: if self.naive {
                Decoding::Naive
            } else {
                Decoding::Incremental
            },
        }
    }
}

/// Cancels on Ctrl-C.
fn cancel_on_ctrl_c() -> CancelToken {
    let token = CancelToken::new();
    let t = token.clone();
    let _ = ctrlc::set_handler(move || t.cancel());
    token
}

fn sample_bar(pb: &ProgressBar) -> impl FnMut(&SampleProgress) -> bool + '_ {
    sample_bar_part(pb, 0, 1)
}

/// Progress of sampler call `part` of `parts` equal ones, on one bar.
fn sample_bar_part(
    pb: &ProgressBar,
    part: usize,
    parts: usize,
) -> impl FnMut(&SampleProgress) -> bool + '_ {
    move |p| {
        pb.set_length(p.total * parts as u64);
        pb.set_position(p.total * part as u64 + p.done);
        pb.set_message(format!(
            "batch {}/{} stage {} slice {}",
            part * p.batches + p.batch + 1,
            parts * p.batches,
            p.stage,
            p.slice
        ));
        true
    }
}

fn image_tensor(path: &std::path::Path) -> Result<tch::Tensor> {
    Ok(data::to_tensor(&data::load_rgb(path)?)?)
}

fn save_image(t: &tch::Tensor, path: &std::path::Path) -> Result<()> {
    data::save_image(&data::from_tensor(t)?, path)?;
    Ok(())
}

/// Checks that an output file can be written, before any long work: a run must not end in "cannot write".
fn check_out_file(path: &std::path::Path) -> Result<()> {
    data::output_format(path)?;
    check_out_file_named(path, "file")
}

/// A file that can be written: not a folder, in a folder that can be created and written into.
fn check_out_file_named(path: &std::path::Path, what: &str) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder: give a {what} name", path.display());
    }
    check_out_dir(data::parent_dir(path))
}

fn check_out_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} exists and is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tempfile::tempfile_in(dir).with_context(|| format!("cannot write into {}", dir.display()))?;
    Ok(())
}

/// Runs a one-image sampler job with a progress bar and Ctrl-C, and writes its image.
fn one_image(
    model: &Pipeline,
    sampling: &Sampling,
    name: &str,
    out: &std::path::Path,
    job: impl FnOnce(
        &Sampler,
        &mut dyn FnMut(&SampleProgress) -> bool,
        &CancelToken,
    ) -> spn::Result<spn::sampler::Samples>,
) -> Result<()> {
    let sampler = Sampler::new(model, sampling.options())?;
    let pb = bar(1, name);
    let r = job(&sampler, &mut sample_bar(&pb), &cancel_on_ctrl_c())?;
    pb.finish_and_clear();
    save_image(&r.images.get(0), out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // Like other Unix tools, end quietly when the reader of stdout goes away (`spn info | head`). Not in
    // training, whose sockets to other ranks must report a dead peer as an error, not die of SIGPIPE.
    #[cfg(unix)]
    if !matches!(cli.cmd, Cmd::Train { .. }) {
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
            save_every_rank,
            flip,
            init,
            force,
        } => {
            let config = match (preset, config) {
                (Some(p), _) => Some(PipelineConfig::preset(&p)?),
                (None, Some(f)) => Some(PipelineConfig::from_file(&f)?),
                (None, None) if resume || init.is_some() => None,
                (None, None) => bail!(
                    "give --preset NAME or --config FILE (presets: {})",
                    PipelineConfig::PRESETS.join(", ")
                ),
            };
            check_out_file_named(&out, "bundle")?;
            let mut opts = TrainOptions::new(data, out.clone(), steps);
            opts.batch_size = batch_size.unwrap_or(opts.batch_size);
            opts.lr = lr.unwrap_or(opts.lr);
            opts.warmup = warmup.unwrap_or(opts.warmup);
            opts.clip = clip.unwrap_or(opts.clip);
            opts.ema = ema;
            opts.checkpoint_every = checkpoint_every;
            opts.seed = seed.unwrap_or(opts.seed);
            opts.heldout_percent = heldout_percent.unwrap_or(opts.heldout_percent);
            opts.stages = stages;
            opts.eval_images = eval_images.unwrap_or(opts.eval_images);
            opts.on_resume = spn::train::ResumeChanges {
                batch_size,
                lr,
                warmup,
                clip,
                seed,
                eval_images,
                ema,
                heldout_percent,
            };
            opts.save_every_rank = save_every_rank;
            opts.flip = flip;
            opts.init = init;
            opts.overwrite = force;
            let dist = spn::dist::Dist::from_env()?;
            let rank = dist.as_ref().map_or(0, |d| d.rank);
            let mut trainer = Trainer::new(config, opts, resume, device, dist)?;
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
                if rank == 0 {
                    println!("wrote {}", out.display());
                }
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
            if limit == Some(0) {
                bail!("--limit must be at least 1");
            }
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
                println!(
                    "  WebP        {:.4} bits/dim (libwebp lossless, -z 9)",
                    r.webp_bits_per_dim
                );
            }
        }
        Cmd::Score {
            model,
            image,
            json,
            heatmap,
        } => {
            if let Some(h) = &heatmap {
                check_out_file(h)?;
            }
            let model = load(model, device)?;
            let img = data::load_rgb(&image)?;
            let r = spn::eval::score(&model, &img)?;
            if let Some(h) = heatmap {
                data::save_image(&spn::eval::heatmap(&r), &h)?;
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
            src_style,
            iconify,
            keys_from,
            out,
            heldout_percent,
            size,
        } => {
            let opts = spn::prepare::PrepareOptions {
                src,
                src_style,
                iconify,
                keys_from,
                out,
                heldout_percent,
                size,
            };
            let items = spn::prepare::plan(&opts)?;
            let pb = bar(items.len() as u64, "data");
            let (tr, ho) = spn::prepare::write(&items, size, &|| pb.inc(1))?;
            pb.finish_and_clear();
            println!(
                "{tr} training and {ho} held-out images in {}",
                opts.out.display()
            );
        }
        Cmd::Generate {
            model,
            count,
            seed,
            out,
            grid,
            sampling,
        } => {
            if out.is_none() && grid.is_none() {
                bail!("give --out DIR and/or --grid FILE");
            }
            let mut seeds = spn::sampler::seed_range(seed, count as u64)?;
            // --out x.png means a file, which only one image can fill; anything else is a folder.
            let out_file = out.as_ref().filter(|o| data::output_format(o).is_ok());
            if let Some(o) = out.as_ref().filter(|o| out_file.is_none() && !o.is_dir()) {
                // x.bmp is meant as a file in a format spn does not write, not as a folder.
                if image::ImageFormat::from_path(o).is_ok() {
                    data::output_format(o)?;
                }
            }
            if let Some(f) = out_file {
                if count != 1 {
                    bail!(
                        "--out {} names an image file, but --count is {count}: give a folder (e.g. --out samples/) or use --grid",
                        f.display()
                    );
                }
                check_out_file(f)?;
            } else if let Some(d) = &out {
                check_out_dir(d)?;
            }
            if let Some(g) = &grid {
                check_out_file(g)?;
            }
            let model = load(model, device)?;
            let sampler = Sampler::new(&model, sampling.options())?;
            // One sampler batch at a time, each written as soon as it is done: memory stays that of one
            // batch, and Ctrl-C keeps every finished image.
            let per = sampling.batch_size.max(1);
            let n_chunks = count.div_ceil(per);
            let pb = bar(1, "generate");
            let cancel = cancel_on_ctrl_c();
            let mut for_grid = Vec::new();
            for ci in 0..n_chunks {
                let chunk: Vec<u64> = seeds.by_ref().take(per).collect();
                let r =
                    sampler.generate(&chunk, &mut sample_bar_part(&pb, ci, n_chunks), &cancel)?;
                if let Some(f) = out_file {
                    save_image(&r.images.get(0), f)?;
                } else if let Some(dir) = &out {
                    for (i, s) in chunk.iter().enumerate() {
                        save_image(
                            &r.images.get(i as i64),
                            &dir.join(format!("sample-{s}.png")),
                        )?;
                    }
                }
                if grid.is_some() {
                    for_grid.push(r.images);
                }
            }
            pb.finish_and_clear();
            if let Some(f) = out_file {
                println!("wrote {}", f.display());
            } else if let Some(dir) = &out {
                println!("wrote {count} images to {}", dir.display());
            }
            if let Some(g) = &grid {
                let all = tch::Tensor::f_cat(&for_grid, 0)?;
                data::save_image(&spn::data::grid(&all)?, g)?;
                println!("wrote {}", g.display());
            }
        }
        Cmd::Complete {
            model,
            image,
            mask,
            seed,
            out,
            sampling,
        } => {
            check_out_file(&out)?;
            let model = load(model, device)?;
            let img = image_tensor(&image)?;
            let dm = data::open_image(&mask).context("the mask")?;
            let known = data::mask_known(&dm)?;
            let (mh, mw) = (known.size()[0], known.size()[1]);
            let (ih, iw) = (img.size()[1], img.size()[2]);
            if (mh, mw) != (ih, iw) {
                bail!("mask is {mw}x{mh} but the image is {iw}x{ih}");
            }
            one_image(&model, &sampling, "complete", &out, |s, p, c| {
                s.complete(&img, &known, &[seed], p, c)
            })?;
        }
        Cmd::UpscaleSize {
            model,
            image,
            seed,
            out,
            sampling,
        } => {
            check_out_file(&out)?;
            let model = load(model, device)?;
            let img = image_tensor(&image)?;
            one_image(&model, &sampling, "upscale-size", &out, |s, p, c| {
                s.upscale_size(&img, &[seed], p, c)
            })?;
        }
        Cmd::UpscaleDepth {
            model,
            image,
            seed,
            out,
            sampling,
        } => {
            check_out_file(&out)?;
            let model = load(model, device)?;
            let img = image_tensor(&image)?;
            one_image(&model, &sampling, "upscale-depth", &out, |s, p, c| {
                s.upscale_depth(&img, &[seed], p, c)
            })?;
        }
        Cmd::Batch {
            model,
            count,
            seed,
            out,
            sampling,
        } => {
            check_out_dir(&out)?;
            let path = model_path(model)?;
            let model = Pipeline::load(&path, device)?;
            let pb = bar(count as u64, "batch");
            // Sharding across processes (torchrun-style RANK / WORLD_SIZE), no communication needed.
            let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
            let shard = (var("RANK").unwrap_or(0), var("WORLD_SIZE").unwrap_or(1));
            let n = spn::batch::run(
                &model,
                &path,
                count,
                seed,
                &out,
                &sampling.options(),
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
            println!("{n} new images in {} ({count} requested)", out.display());
        }
        Cmd::Bench {
            model,
            preset,
            batch_size,
            images,
            naive_positions,
            json,
        } => {
            if batch_size == 0 || images == Some(0) {
                bail!("--batch-size and --images must be at least 1");
            }
            let (pipeline, name) = match preset {
                Some(p) => {
                    tch::manual_seed(0);
                    (
                        Pipeline::new(PipelineConfig::preset(&p)?, device)?,
                        format!("preset {p}"),
                    )
                }
                None => {
                    let path = model_path(model)?;
                    (Pipeline::load(&path, device)?, path.display().to_string())
                }
            };
            let r = spn::bench::run(
                &pipeline,
                &name,
                batch_size,
                images.unwrap_or(batch_size),
                naive_positions,
            )?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "{} on {} ({} threads) at batch {}",
                    r.model, r.device, r.threads, r.batch_size
                );
                println!(
                    "  incremental {:>10.1} ms/image {:>8.2} images/s ({} decoder)",
                    r.incremental_ms_per_image, r.incremental_images_per_sec, r.incremental_decoder
                );
                println!("  naive       {:>10.1} ms/image {:>8.3} images/s (timed over {} positions per stage)", r.naive_ms_per_image, r.naive_images_per_sec, r.naive_positions);
                println!("  speed-up    {:>10.1}x", r.speedup);
                println!("  {:.2} GFLOP/image: {:.1} GFLOP/s achieved, {:.1} GFLOP/s matmul peak ({:.1}%)", r.gflop_per_image, r.achieved_gflops, r.matmul_gflops, 100.0 * r.fraction_of_matmul_peak);
            }
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
