//! Exact scoring of an image through the sampler's own stage and slice plumbing: every sub-pixel known, every
//! slice scored in one pass by the engine (`Engine::score`), so that libspn scores with the plain-Rust engine
//! as well as with libtorch (`eval::score` is the libtorch reference; tests hold the two to each other).
use super::{no_progress, Batch, CancelToken, Job, Rows, Sampler};
use crate::error::{Error, Result};
use image::RgbImage;
use rand::SeedableRng;

/// The bits of one image under the model.
#[derive(Clone, Debug)]
pub struct Score {
    pub total_bits: f64,
    /// `(stage name, bits)` in generation order.
    pub stages: Vec<(&'static str, f64)>,
    /// Bits of every sub-pixel, `(H, W, 3)` row-major: for a pipeline, those of the parts of it (MSBs, LSBs)
    /// each stage predicts, added.
    pub bits: Vec<f32>,
}

impl Sampler<'_> {
    /// Scores `img`, which must have the model's size.
    pub fn score(&self, img: &RgbImage) -> Result<Score> {
        let (h, w) = self.hw();
        if (img.height() as usize, img.width() as usize) != (h, w) {
            return Err(Error::input(format!(
                "image is {}x{}; this model scores {w}x{h} images",
                img.width(),
                img.height()
            )));
        }
        // Planar (3, H, W), as jobs hold images.
        let raw = img.as_raw();
        let init = (0..3)
            .flat_map(|c| (0..h * w).map(move |p| raw[p * 3 + c] as i64))
            .collect();
        let job = Job {
            init,
            known_msb: vec![true; 3 * h * w],
            known_lsb: vec![true; 3 * h * w],
            run_known: false,
        };
        let mut rows = Rows {
            done: 0,
            total: self.rows_per_batch(),
            batches: 1,
            batch: 0,
        };
        let mut batch = Batch {
            rngs: vec![rand_chacha::ChaCha8Rng::seed_from_u64(0)],
            log_probs: vec![0.0],
            maps: Some(Vec::new()),
            threads: self.threads,
            rows: &mut rows,
            progress: &mut no_progress(),
            cancel: &CancelToken::new(),
        };
        self.run_batch(&job, &mut batch)?;
        let maps = batch.maps.unwrap_or_default();
        let ln2 = std::f32::consts::LN_2;
        let mut bits = vec![0f32; 3 * h * w];
        let mut stages = Vec::new();
        for (spec, map) in self.specs.iter().zip(&maps) {
            stages.push((
                spec.kind.name(),
                map.iter().map(|&v| (v / ln2) as f64).sum(),
            ));
            for (p, px) in bits.chunks_exact_mut(3).enumerate() {
                for (c, b) in px.iter_mut().enumerate() {
                    *b += map[c * h * w + p] / ln2;
                }
            }
        }
        Ok(Score {
            total_bits: bits.iter().map(|&b| b as f64).sum(),
            stages,
            bits,
        })
    }
}
