//! The sampling commands: `spn generate`, `spn complete`, `spn upscale-size`, `spn upscale-depth`.
use crate::io::{check_out_dir, check_out_file, load};
use crate::progress::{bar, cancel_on_ctrl_c, sample_bar, sample_bar_part};
use crate::Device;
use anyhow::{bail, Context, Result};
use image::GenericImageView;
use spn::data;
use spn::sampler::{CanvasJob, Decoding, Pick, SampleOptions, Sampler};
use spn::Network;
use std::path::{Path, PathBuf};

/// How a sampling command samples.
#[derive(clap::Args, Clone)]
pub struct Sampling {
    #[arg(long, default_value_t = SampleOptions::default().temperature, allow_negative_numbers = true)]
    temperature: f64,
    #[arg(long, default_value_t = SampleOptions::default().batch_size)]
    pub batch_size: usize,
    /// A full decoder pass per pixel (slow; the reference for the incremental engines).
    #[arg(long)]
    naive: bool,
    /// Pixels that neighbouring model-size windows share on a canvas larger than the model (rounded up to a
    /// multiple of the model's scale). Default: 3/8 of the model's width, from measured seams (24 for 64x64).
    #[arg(long)]
    overlap: Option<usize>,
    /// Take each sub-pixel's mean level under the model (deterministic; what minimises the expected squared
    /// error, for upscaling judged like a filter) instead of drawing it.
    #[arg(long)]
    mean: bool,
    /// Average this many independent draws into each image (1 to 64): an estimate of the posterior mean,
    /// the upscale with the least expected squared error (models/README.md, "Averaged draws"); costs N
    /// draws, sampled together in batches.
    #[arg(long, default_value_t = 1, value_name = "N")]
    average: usize,
}

impl Sampling {
    pub fn options(&self) -> SampleOptions {
        SampleOptions {
            temperature: self.temperature,
            batch_size: self.batch_size,
            decoding: if self.naive {
                Decoding::Naive
            } else {
                Decoding::Incremental
            },
            overlap: self.overlap,
            pick: if self.mean { Pick::Mean } else { Pick::Sample },
            draws: self.average,
            ..Default::default()
        }
    }
}

/// Generate new images: DIR/sample-SEED.png for seeds SEED..SEED+COUNT (or, for one image, --out FILE.png).
#[derive(clap::Args)]
pub struct GenerateArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Width of the images (default: the model's); larger canvases are sampled window by window.
    #[arg(long)]
    width: Option<u32>,
    /// Height of the images (default: the model's).
    #[arg(long)]
    height: Option<u32>,
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write all samples tiled into one PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    #[command(flatten)]
    sampling: Sampling,
}

/// Where `generate` writes: one file, or a folder; checked before any sampling.
fn generate_target(a: &GenerateArgs) -> Result<Option<&Path>> {
    if a.out.is_none() && a.grid.is_none() {
        bail!("give --out DIR and/or --grid FILE");
    }
    // --out x.png means a file, which only one image can fill; anything else is a folder.
    let out_file = a.out.as_deref().filter(|o| data::output_format(o).is_ok());
    if let Some(o) = a.out.as_ref().filter(|o| out_file.is_none() && !o.is_dir()) {
        // x.bmp is meant as a file in a format spn does not write, not as a folder.
        if image::ImageFormat::from_path(o).is_ok() {
            data::output_format(o)?;
        }
    }
    if let Some(f) = out_file {
        if a.count != 1 {
            bail!(
                "--out {} names an image file, but --count is {}: give a folder (e.g. --out samples/) or use --grid",
                f.display(),
                a.count
            );
        }
        check_out_file(f)?;
    } else if let Some(d) = &a.out {
        check_out_dir(d)?;
    }
    if let Some(g) = &a.grid {
        check_out_file(g)?;
    }
    Ok(out_file)
}

pub fn run_generate(a: GenerateArgs, device: Device) -> Result<()> {
    let mut seeds = spn::sampler::seed_range(a.seed, a.count as u64)?;
    let out_file = generate_target(&a)?;
    let model = load(a.model.clone(), &device, a.sampling.options().decoding)?;
    let cfg = model.config();
    let job = CanvasJob::Generate {
        width: a.width.unwrap_or(cfg.width as u32),
        height: a.height.unwrap_or(cfg.height as u32),
    };
    let sampler = Sampler::new(&*model, a.sampling.options())?;
    // One sampler batch at a time, each written as soon as it is done: memory stays that of one batch, and
    // Ctrl-C keeps every finished image.
    let per = a.sampling.batch_size.max(1);
    let n_chunks = a.count.div_ceil(per);
    let pb = bar(1, "generate");
    let cancel = cancel_on_ctrl_c();
    let mut for_grid = Vec::new();
    for ci in 0..n_chunks {
        let chunk: Vec<u64> = seeds.by_ref().take(per).collect();
        let r = sampler.canvas(
            &job,
            &chunk,
            &mut sample_bar_part(&pb, ci, n_chunks),
            &cancel,
        )?;
        for c in &r {
            if let Some(f) = out_file {
                data::save_any(&c.image, f)?;
            } else if let Some(dir) = &a.out {
                data::save_any(&c.image, &dir.join(format!("sample-{}.png", c.seed)))?;
            }
            if a.grid.is_some() {
                for_grid.push(c.image.to_rgb8());
            }
        }
    }
    pb.finish_and_clear();
    if let Some(f) = out_file {
        println!("wrote {}", f.display());
    } else if let Some(dir) = &a.out {
        println!("wrote {} images to {}", a.count, dir.display());
    }
    if let Some(g) = &a.grid {
        data::save_image(&data::grid_of(&for_grid), g)?;
        println!("wrote {}", g.display());
    }
    Ok(())
}

/// Runs a one-image canvas job with a progress bar and Ctrl-C, and writes its image (alpha kept where the
/// format has it).
fn one_image(
    model: &dyn Network,
    sampling: &Sampling,
    out: &Path,
    job: &CanvasJob,
    seed: u64,
) -> Result<()> {
    let sampler = Sampler::new(model, sampling.options())?;
    let pb = bar(1, job.name());
    let r = sampler.canvas(job, &[seed], &mut sample_bar(&pb), &cancel_on_ctrl_c())?;
    pb.finish_and_clear();
    let first = r.first().context("the sampler returned no image")?;
    data::save_any(&first.image, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Complete a partially drawn image of any size: MASK (the image's size) is white where pixels are known
/// (kept exactly, alpha too), black or transparent where the model draws (the mask rule of
/// `spn::data::mask_flags`).
#[derive(clap::Args)]
pub struct CompleteArgs {
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
}

pub fn run_complete(a: CompleteArgs, device: Device) -> Result<()> {
    check_out_file(&a.out)?;
    let img = data::open_image(&a.image)?;
    let dm = data::open_image(&a.mask).map_err(|e| anyhow::anyhow!("the mask: {e}"))?;
    if dm.dimensions() != img.dimensions() {
        let ((mw, mh), (iw, ih)) = (dm.dimensions(), img.dimensions());
        bail!("mask is {mw}x{mh} but the image is {iw}x{ih}");
    }
    let known = data::mask_flags(&dm);
    if known.iter().all(|&k| k) {
        log::warn!("the mask marks every pixel as known: there is nothing to complete");
    }
    let model = load(a.model, &device, a.sampling.options().decoding)?;
    let job = CanvasJob::Complete {
        image: &img,
        known: &known,
    };
    one_image(&*model, &a.sampling, &a.out, &job, a.seed)
}

/// Upscale size (each pixel of an image of any size becomes pixel (F*y, F*x) of one F times larger; F is
/// --factor, by default the model's scale S) or depth (keep the top bits of every value, resample the low
/// bits). Alpha is kept.
#[derive(clap::Args)]
pub struct UpscaleArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    image: PathBuf,
    /// upscale-size: the factor F (default: the model's scale S, the image becoming slice 0). Any other
    /// factor from 2 draws the rest as completion does: 4 takes 64x64 to 256x256 with an S = 8 model.
    #[arg(long)]
    factor: Option<u32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    sampling: Sampling,
}

pub enum Upscale {
    Size,
    Depth,
}

pub fn run_upscale(a: UpscaleArgs, device: Device, what: Upscale) -> Result<()> {
    check_out_file(&a.out)?;
    let img = data::open_image(&a.image)?;
    let model = load(a.model, &device, a.sampling.options().decoding)?;
    let job = match what {
        Upscale::Size => CanvasJob::UpscaleSize {
            image: &img,
            factor: a.factor,
        },
        Upscale::Depth if a.factor.is_some() => {
            bail!("--factor is for upscale-size: upscale-depth keeps the image's size")
        }
        Upscale::Depth => CanvasJob::UpscaleDepth { image: &img },
    };
    one_image(&*model, &a.sampling, &a.out, &job, a.seed)
}
