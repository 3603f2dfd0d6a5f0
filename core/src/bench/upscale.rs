//! Upscaling against classic filters (`spn bench --upscale`, issue 15 item 5): on held-out images, the
//! model's size upscaling by a factor F from every F-th pixel (by default F = S: the image's slice 0) against
//! Lanczos and Catmull-Rom from the same pixels (aligned to them, `resample`), in PSNR; and on inputs unlike emoji (flat colour, a gradient,
//! line art, a coloured background), how much of a flat region stays flat.
use crate::data::{list_images, load_rgb};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::resample::{upscale_aligned, Kernel};
use crate::sampler::{no_progress, CancelToken, CanvasJob, Pick, SampleOptions, Sampler};
use image::{DynamicImage, Rgb, RgbImage};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct PsnrRow {
    pub set: String,
    pub images: usize,
    pub temperature: f64,
    /// Mean over images of each one's PSNR (dB, RGB, 8 bits) against the original.
    pub model_psnr: f64,
    pub lanczos_psnr: f64,
    pub catmull_rom_psnr: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlatRow {
    pub input: String,
    pub temperature: f64,
    /// Share of the pixels of the input's flat (or, for the gradient, smooth) region that come back within 8
    /// levels (every channel) of the original.
    pub flat_kept: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpscaleReport {
    pub model: String,
    pub scale: u32,
    /// The upscaling factor F: inputs are every F-th pixel.
    pub factor: u32,
    /// Draws averaged into each upscale (1: one draw, or the mean levels).
    pub draws: usize,
    pub psnr: Vec<PsnrRow>,
    pub flat: Vec<FlatRow>,
}

/// Every F-th pixel from the top-left (for F = S the image's slice 0): the input size upscaling and the
/// filters share.
fn subsample(img: &RgbImage, s: u32) -> RgbImage {
    RgbImage::from_fn(img.width() / s, img.height() / s, |x, y| {
        *img.get_pixel(s * x, s * y)
    })
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn filter(small: &RgbImage, s: u32, k: Kernel) -> RgbImage {
    let (w, h) = small.dimensions();
    let px = upscale_aligned(small.as_raw(), (w as usize, h as usize, 3), s as usize, k);
    RgbImage::from_raw(w * s, h * s, px).unwrap_or_default()
}

fn model_upscale(sampler: &Sampler, small: &RgbImage, factor: u32, seed: u64) -> Result<RgbImage> {
    let input = DynamicImage::ImageRgb8(small.clone());
    let out = sampler.canvas(
        &CanvasJob::UpscaleSize {
            image: &input,
            factor: Some(factor),
        },
        &[seed],
        &mut no_progress(),
        &CancelToken::new(),
    )?;
    Ok(out
        .into_iter()
        .next()
        .ok_or_else(|| Error::Other("no image".into()))?
        .image
        .to_rgb8())
}

/// The inputs unlike emoji, each with its flat region: (name, image, is the pixel in the flat region).
type Synthetic = (&'static str, RgbImage, fn(u32, u32, u32) -> bool);

fn synthetic(side: u32) -> Vec<Synthetic> {
    let green = Rgb([60, 170, 80]);
    vec![
        (
            "flat green",
            RgbImage::from_pixel(side, side, green),
            |_, _, _| true,
        ),
        (
            "gradient",
            RgbImage::from_fn(side, side, |x, _| Rgb([(x * 255 / side) as u8, 120, 200])),
            |_, _, _| true,
        ),
        (
            "line art on white",
            RgbImage::from_fn(side, side, |x, y| {
                if x % (side / 4) < 2 || (x + y) % (side / 2) < 2 {
                    Rgb([20, 20, 20])
                } else {
                    Rgb([255; 3])
                }
            }),
            // White away from the lines (3 pixels of margin).
            |x, y, side| {
                x % (side / 4) >= 5 && (x + y) % (side / 2) >= 5 && x % (side / 4) < side / 4 - 3
            },
        ),
        (
            "disc on a coloured background",
            RgbImage::from_fn(side, side, |x, y| {
                let (dx, dy) = (x as f32 - side as f32 / 2.0, y as f32 - side as f32 / 2.0);
                if dx * dx + dy * dy < (side as f32 / 4.0).powi(2) {
                    Rgb([240, 200, 40])
                } else {
                    Rgb([40, 60, 160])
                }
            }),
            // The background, away from the disc.
            |x, y, side| {
                let (dx, dy) = (x as f32 - side as f32 / 2.0, y as f32 - side as f32 / 2.0);
                (dx * dx + dy * dy).sqrt() > side as f32 / 4.0 + 6.0
            },
        ),
    ]
}

/// Writes one example's pictures: the input (every F-th pixel), Lanczos and the model from it, and the original, as
/// `DIR/NAME-{input,lanczos,model,original}.png`.
fn save_example(dir: &Path, name: &str, images: [&RgbImage; 4]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::data::cannot_write(dir, e))?;
    for (what, img) in ["input", "lanczos", "model", "original"]
        .into_iter()
        .zip(images)
    {
        crate::data::save_png(img, &dir.join(format!("{name}-{what}.png")))?;
    }
    Ok(())
}

/// The model's and the filters' mean PSNR on the first `limit` images of `dir`, upscaled by factor `s`, at
/// temperature `t`; with `pictures`, the first image's pictures go there.
fn psnr_row(
    sampler: &Sampler,
    dir: &std::path::Path,
    (limit, t, s): (usize, f64, u32),
    pictures: Option<&Path>,
) -> Result<PsnrRow> {
    let files: Vec<PathBuf> = list_images(dir)?.into_iter().take(limit).collect();
    let (mut m, mut l, mut c) = (0.0, 0.0, 0.0);
    for (i, f) in files.iter().enumerate() {
        let img = load_rgb(f)?;
        let img = image::imageops::crop_imm(&img, 0, 0, img.width() / s * s, img.height() / s * s)
            .to_image();
        let small = subsample(&img, s);
        let (up, lanczos) = (
            model_upscale(sampler, &small, s, i as u64)?,
            filter(&small, s, Kernel::Lanczos3),
        );
        m += psnr(&img, &up);
        l += psnr(&img, &lanczos);
        c += psnr(&img, &filter(&small, s, Kernel::CatmullRom));
        if let (Some(out), 0) = (pictures, i) {
            let set = dir
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let stem = f
                .file_stem()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let name = format!("{set}-{stem}-t{t}");
            save_example(out, &name, [&small, &lanczos, &up, &img])?;
        }
    }
    let n = files.len().max(1) as f64;
    log::info!(
        "{} at T {t}: model {:.2} dB, Lanczos {:.2} dB",
        dir.display(),
        m / n,
        l / n
    );
    Ok(PsnrRow {
        set: dir.display().to_string(),
        images: files.len(),
        temperature: t,
        model_psnr: m / n,
        lanczos_psnr: l / n,
        catmull_rom_psnr: c / n,
    })
}

/// PSNR against the filters on each folder of `sets` (its first `limit` images, sorted by name), and flat
/// regions on synthetic inputs, at each temperature, upscaling by `factor` (None: the model's scale S), with
/// windows sharing `overlap` pixels on canvases larger than the model (None: the sampler's default).
/// `pick`: how the model chooses values (drawn, or each sub-pixel's mean level); `draws`: draws averaged into
/// each upscale (`SampleOptions::draws`). With `pictures`, each set's
/// first image and each synthetic input are written there as pictures ([`save_example`]).
pub fn run(
    p: &Pipeline,
    name: &str,
    sets: &[PathBuf],
    (temperatures, pick, draws): (&[f64], Pick, usize),
    (limit, factor, overlap): (usize, Option<u32>, Option<usize>),
    pictures: Option<&Path>,
) -> Result<UpscaleReport> {
    // Checked before anything divides by it: the sampler's rule for the factor.
    let s = crate::sampler::upscale_factor(p.config(), factor)? as u32;
    let side = p.config().width as u32;
    let mut psnr_rows = Vec::new();
    let mut flat_rows = Vec::new();
    for &t in temperatures {
        let sampler = Sampler::new(
            p,
            SampleOptions {
                temperature: t,
                // An image's draws are sampled together.
                batch_size: draws,
                pick,
                draws,
                overlap,
                ..Default::default()
            },
        )?;
        for dir in sets {
            psnr_rows.push(psnr_row(&sampler, dir, (limit, t, s), pictures)?);
        }
        for (input, img, flat) in synthetic(side) {
            let small = subsample(&img, s);
            let up = model_upscale(&sampler, &small, s, 0)?;
            if let Some(out) = pictures {
                let lanczos = filter(&small, s, Kernel::Lanczos3);
                let name = format!("{}-t{t}", input.replace(' ', "-"));
                save_example(out, &name, [&small, &lanczos, &up, &img])?;
            }
            let (mut kept, mut total) = (0usize, 0usize);
            for (x, y, px) in up.enumerate_pixels() {
                if flat(x, y, side) {
                    total += 1;
                    let o = img.get_pixel(x, y);
                    kept += (0..3).all(|c| (px[c] as i32 - o[c] as i32).abs() <= 8) as usize;
                }
            }
            if total > 0 {
                flat_rows.push(FlatRow {
                    input: input.into(),
                    temperature: t,
                    flat_kept: kept as f64 / total as f64,
                });
            }
        }
    }
    Ok(UpscaleReport {
        model: name.into(),
        scale: p.config().scale as u32,
        factor: s,
        draws,
        psnr: psnr_rows,
        flat: flat_rows,
    })
}
