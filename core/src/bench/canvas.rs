//! Canvas benchmark (`spn bench --canvas`): milliseconds per megapixel of the windowed jobs at several canvas
//! sizes, in one run, and the seams between windows (`sampler::seams`).
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::sampler::seams::{self, Seams};
use crate::sampler::{no_progress, CancelToken, CanvasJob, SampleOptions, Sampler};
use image::{DynamicImage, Rgb, RgbImage};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct CanvasRow {
    pub job: String,
    /// The result's side, in pixels.
    pub size: u32,
    pub seconds: f64,
    pub ms_per_megapixel: f64,
    /// None for jobs whose canvas is one window.
    pub seams: Option<Seams>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CanvasReport {
    pub model: String,
    pub device: String,
    pub threads: i64,
    pub batch_size: usize,
    pub rows: Vec<CanvasRow>,
}

/// The jobs timed: upscale-depth and upscale-size of a whole canvas, and completion of its right half.
pub const JOBS: [&str; 3] = ["upscale-depth", "upscale-size", "complete-half"];

/// A synthetic canvas of the kinds of content a designer brings: a smooth two-colour gradient, flat discs,
/// and dark strokes; the same for every run.
pub fn test_canvas(side: u32) -> RgbImage {
    let f = side as f32;
    let disc =
        |x: f32, y: f32, cx: f32, cy: f32, r: f32| (x - cx).powi(2) + (y - cy).powi(2) < r * r;
    RgbImage::from_fn(side, side, |x, y| {
        let (u, v) = (x as f32 / f, y as f32 / f);
        if ((u - v).abs() < 0.01) || ((u + v - 1.2).abs() < 0.008) {
            Rgb([30, 30, 40])
        } else if disc(u, v, 0.3, 0.35, 0.18) {
            Rgb([240, 190, 40])
        } else if disc(u, v, 0.72, 0.7, 0.15) {
            Rgb([60, 140, 220])
        } else {
            Rgb([(80.0 + 150.0 * u) as u8, (200.0 - 100.0 * v) as u8, 170])
        }
    })
}

/// Times every job of [`JOBS`] at every canvas side in `sizes` (multiples of the model's scale S), with
/// `overlap` between windows (None: each job's default).
pub fn run(
    p: &Pipeline,
    name: &str,
    sizes: &[u32],
    batch_size: usize,
    overlap: Option<usize>,
) -> Result<CanvasReport> {
    let sampler = Sampler::new(
        p,
        SampleOptions {
            batch_size,
            overlap,
            ..Default::default()
        },
    )?;
    let s = p.config().scale as u32;
    let mut rows = Vec::new();
    for &n in sizes {
        let full = DynamicImage::ImageRgb8(test_canvas(n));
        let small = DynamicImage::ImageRgb8(test_canvas((n / s).max(1)));
        let half: Vec<bool> = (0..n * n).map(|i| i % n < n / 2).collect();
        for job in JOBS {
            let j = match job {
                "upscale-depth" => CanvasJob::UpscaleDepth { image: &full },
                "upscale-size" => CanvasJob::UpscaleSize {
                    image: &small,
                    factor: None,
                },
                _ => CanvasJob::Complete {
                    image: &full,
                    known: &half,
                },
            };
            rows.push(time_job(&sampler, &j, job, p.config())?);
            log::info!(
                "{job} at {n}x{n}: {:.1} s",
                rows.last().map_or(0.0, |r| r.seconds)
            );
        }
    }
    Ok(CanvasReport {
        model: name.to_string(),
        device: format!("{:?}", p.device()),
        threads: tch::get_num_threads() as i64,
        batch_size,
        rows,
    })
}

fn time_job(
    sampler: &Sampler,
    job: &CanvasJob,
    name: &str,
    config: &PipelineConfig,
) -> Result<CanvasRow> {
    let t = Instant::now();
    let out = sampler.canvas(job, &[0], &mut no_progress(), &CancelToken::new())?;
    let seconds = t.elapsed().as_secs_f64();
    let img = out.first().map(|c| c.image.to_rgb8()).unwrap_or_default();
    let owners = sampler.window_owners(job)?;
    let px = img.width() as f64 * img.height() as f64;
    Ok(CanvasRow {
        job: name.to_string(),
        size: img.width(),
        seconds,
        ms_per_megapixel: seconds * 1e3 / (px / 1e6),
        seams: seams::measure_job(&img, &owners, job, config.scale as usize, config.msb_bits),
    })
}
