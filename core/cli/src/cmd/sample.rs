//! The sampling commands: `spn generate`, `spn complete`, `spn upscale-size`, `spn upscale-depth`.
use crate::io::{check_out_dir, check_out_file, image_tensor, load, save_image};
use crate::progress::{bar, cancel_on_ctrl_c, sample_bar, sample_bar_part};
use anyhow::{bail, Result};
use spn::data;
use spn::sampler::{CancelToken, Decoding, SampleOptions, SampleProgress, Sampler, Samples};
use spn::Pipeline;
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

pub fn run_generate(a: GenerateArgs, device: tch::Device) -> Result<()> {
    let mut seeds = spn::sampler::seed_range(a.seed, a.count as u64)?;
    let out_file = generate_target(&a)?;
    let model = load(a.model.clone(), device)?;
    let sampler = Sampler::new(&model, a.sampling.options())?;
    // One sampler batch at a time, each written as soon as it is done: memory stays that of one batch, and
    // Ctrl-C keeps every finished image.
    let per = a.sampling.batch_size.max(1);
    let n_chunks = a.count.div_ceil(per);
    let pb = bar(1, "generate");
    let cancel = cancel_on_ctrl_c();
    let mut for_grid = Vec::new();
    for ci in 0..n_chunks {
        let chunk: Vec<u64> = seeds.by_ref().take(per).collect();
        let r = sampler.generate(&chunk, &mut sample_bar_part(&pb, ci, n_chunks), &cancel)?;
        if let Some(f) = out_file {
            save_image(&r.images.get(0), f)?;
        } else if let Some(dir) = &a.out {
            for (i, s) in chunk.iter().enumerate() {
                save_image(
                    &r.images.get(i as i64),
                    &dir.join(format!("sample-{s}.png")),
                )?;
            }
        }
        if a.grid.is_some() {
            for_grid.push(r.images);
        }
    }
    pb.finish_and_clear();
    if let Some(f) = out_file {
        println!("wrote {}", f.display());
    } else if let Some(dir) = &a.out {
        println!("wrote {} images to {}", a.count, dir.display());
    }
    if let Some(g) = &a.grid {
        let all = tch::Tensor::f_cat(&for_grid, 0)?;
        data::save_image(&data::grid(&all)?, g)?;
        println!("wrote {}", g.display());
    }
    Ok(())
}

/// Runs a one-image sampler job with a progress bar and Ctrl-C, and writes its image.
fn one_image(
    model: &Pipeline,
    sampling: &Sampling,
    name: &str,
    out: &Path,
    job: impl FnOnce(
        &Sampler,
        &mut dyn FnMut(&SampleProgress) -> bool,
        &CancelToken,
    ) -> spn::Result<Samples>,
) -> Result<()> {
    let sampler = Sampler::new(model, sampling.options())?;
    let pb = bar(1, name);
    let r = job(&sampler, &mut sample_bar(&pb), &cancel_on_ctrl_c())?;
    pb.finish_and_clear();
    save_image(&r.images.get(0), out)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Complete a partially drawn image: MASK is white where pixels are known (kept exactly), black or
/// transparent where the model draws (the mask rule of `spn::data::mask_known`).
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

pub fn run_complete(a: CompleteArgs, device: tch::Device) -> Result<()> {
    check_out_file(&a.out)?;
    let model = load(a.model, device)?;
    let img = image_tensor(&a.image)?;
    let dm = data::open_image(&a.mask).map_err(|e| anyhow::anyhow!("the mask: {e}"))?;
    let known = data::mask_known(&dm)?;
    let (mh, mw) = (known.size()[0], known.size()[1]);
    let (ih, iw) = (img.size()[1], img.size()[2]);
    if (mh, mw) != (ih, iw) {
        bail!("mask is {mw}x{mh} but the image is {iw}x{ih}");
    }
    let seed = a.seed;
    one_image(&model, &a.sampling, "complete", &a.out, |s, p, c| {
        s.complete(&img, &known, &[seed], p, c)
    })
}

/// Upscale size (the small image becomes slice 0 of an image S times larger) or depth (keep the top bits of
/// every value, resample the low bits).
#[derive(clap::Args)]
pub struct UpscaleArgs {
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
}

pub enum Upscale {
    Size,
    Depth,
}

pub fn run_upscale(a: UpscaleArgs, device: tch::Device, what: Upscale) -> Result<()> {
    check_out_file(&a.out)?;
    let model = load(a.model, device)?;
    let img = image_tensor(&a.image)?;
    let seed = a.seed;
    match what {
        Upscale::Size => one_image(&model, &a.sampling, "upscale-size", &a.out, |s, p, c| {
            s.upscale_size(&img, &[seed], p, c)
        }),
        Upscale::Depth => one_image(&model, &a.sampling, "upscale-depth", &a.out, |s, p, c| {
            s.upscale_depth(&img, &[seed], p, c)
        }),
    }
}
