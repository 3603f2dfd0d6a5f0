//! Exact evaluation (the sum over every slice of every stage) and per-sub-pixel scoring.
use crate::data;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use image::RgbImage;
use serde::Serialize;
use std::path::PathBuf;
use tch::Kind;

#[derive(Debug, Clone, Serialize)]
pub struct StageBits {
    pub stage: String,
    pub bits_per_dim: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub images: usize,
    pub bits_per_dim: f64,
    pub stages: Vec<StageBits>,
    pub png_bits_per_dim: f64,
    pub webp_bits_per_dim: f64,
    /// JPEG XL lossless at libjxl's strongest effort; None where `cjxl` is not installed.
    pub jxl_bits_per_dim: Option<f64>,
}

/// Exact bits/dim of the model on image files (fitted to the model size), next to lossless PNG and WebP
/// of the same fitted images.
pub fn evaluate(model: &Pipeline, files: &[PathBuf], batch_size: i64) -> Result<EvalReport> {
    evaluate_with_progress(model, files, batch_size, |_, _| {})
}

pub fn evaluate_with_progress(
    model: &Pipeline,
    files: &[PathBuf],
    batch_size: i64,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport> {
    if files.is_empty() {
        return Err(Error::input("no images to evaluate"));
    }
    let cfg = &model.config;
    let n_stages = model.stages.len();
    let mut stage_nats = vec![0f64; n_stages];
    let mut codecs = data::CodecSizes {
        jxl: Some(0),
        ..Default::default()
    };
    for chunk in files.chunks(batch_size.max(1) as usize) {
        let mut ts = Vec::with_capacity(chunk.len());
        let mut imgs = Vec::with_capacity(chunk.len());
        for f in chunk {
            let img = data::fit(data::load_rgb(f)?, cfg.height as u32, cfg.width as u32);
            ts.push(data::to_tensor(&img)?);
            imgs.push(img);
        }
        codecs = codecs + codec_sizes_of(&imgs)?;
        let x = tch::Tensor::f_stack(&ts, 0)?;
        let l = model.likelihood(&x)?;
        for (i, t) in l.per_stage.iter().enumerate() {
            stage_nats[i] += t.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
        progress(chunk.len(), files.len());
    }
    let n = files.len() as f64;
    let dims = cfg.dims() as f64 * n;
    let stages: Vec<StageBits> = model
        .specs()
        .iter()
        .zip(&stage_nats)
        .map(|(s, nats)| StageBits {
            stage: s.kind.name().into(),
            bits_per_dim: model.bits_per_dim(nats / n),
        })
        .collect();
    Ok(EvalReport {
        images: files.len(),
        bits_per_dim: stages.iter().map(|s| s.bits_per_dim).sum(),
        stages,
        png_bits_per_dim: codecs.png as f64 * 8.0 / dims,
        webp_bits_per_dim: codecs.webp as f64 * 8.0 / dims,
        jxl_bits_per_dim: codecs.jxl.map(|b| b as f64 * 8.0 / dims),
    })
}

/// The codecs' sizes of images, summed. libwebp and libjxl at their strongest settings cost about as much
/// as the model's own pass: spread over the cores.
fn codec_sizes_of(imgs: &[RgbImage]) -> Result<data::CodecSizes> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = imgs.len().div_ceil(threads).max(1);
    let zero = data::CodecSizes {
        jxl: Some(0),
        ..Default::default()
    };
    let sizes: Vec<Result<data::CodecSizes>> = std::thread::scope(|sc| {
        let handles: Vec<_> = imgs
            .chunks(per)
            .map(|part| {
                sc.spawn(move || {
                    part.iter()
                        .try_fold(zero, |acc, img| Ok(acc + data::codec_sizes(img)?))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Other("codec thread panicked".into())))
            })
            .collect()
    });
    sizes.into_iter().try_fold(zero, |acc, r| Ok(acc + r?))
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    pub height: i64,
    pub width: i64,
    pub channels: i64,
    pub total_bits: f64,
    pub bits_per_dim: f64,
    pub stages: Vec<StageBits>,
    /// Bits of every sub-pixel, row-major H x W x C; a sub-pixel's bits sum over the stages that predict
    /// part of it.
    pub bits: Vec<f32>,
}

/// Scores one image (already of the model size).
pub fn score(model: &Pipeline, img: &RgbImage) -> Result<ScoreReport> {
    let cfg = &model.config;
    if img.height() as i64 != cfg.height || img.width() as i64 != cfg.width {
        return Err(Error::input(format!(
            "image is {}x{}; this model scores {}x{} images",
            img.width(),
            img.height(),
            cfg.width,
            cfg.height
        )));
    }
    let x = data::to_tensor(img)?.f_unsqueeze(0)?;
    let maps = tch::no_grad(|| model.nll_maps(&x))?;
    let mut total = maps[0].f_zeros_like()?;
    let mut stages = Vec::new();
    for (m, s) in maps.iter().zip(model.specs()) {
        total = total.f_add(m)?;
        let nats = m.f_sum(Kind::Double)?.f_double_value(&[])?;
        stages.push(StageBits {
            stage: s.kind.name().into(),
            bits_per_dim: model.bits_per_dim(nats),
        });
    }
    let bits_t = total
        .f_div_scalar(std::f64::consts::LN_2)?
        .f_get(0)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?;
    let bits = Vec::<f32>::try_from(bits_t.f_flatten(0, -1)?.f_to_device(tch::Device::Cpu)?)?;
    let total_bits: f64 = bits.iter().map(|&b| b as f64).sum();
    Ok(ScoreReport {
        height: cfg.height,
        width: cfg.width,
        channels: 3,
        total_bits,
        bits_per_dim: total_bits / cfg.dims() as f64,
        stages,
        bits,
    })
}

/// Where the model was surprised: bits per pixel (summed over channels) as a black-red-yellow-white map,
/// scaled to the image's 99th percentile.
pub fn heatmap(report: &ScoreReport) -> RgbImage {
    let (h, w) = (report.height as u32, report.width as u32);
    let per_pixel: Vec<f32> = report.bits.chunks(3).map(|c| c.iter().sum()).collect();
    let mut sorted = per_pixel.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let top = sorted[((sorted.len() - 1) as f32 * 0.99) as usize].max(1e-6);
    RgbImage::from_fn(w, h, |x, y| {
        let t = (per_pixel[(y * w + x) as usize] / top).clamp(0.0, 1.0) * 3.0;
        let ch = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        image::Rgb([ch(t), ch(t - 1.0), ch(t - 2.0)])
    })
}
