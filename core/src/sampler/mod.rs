//! The sampler: generate, complete, upscale size, upscale depth. Every job runs the pipeline's stages in
//! subscale order, sub-pixel by sub-pixel, with known sub-pixels clamped to their values.
//!
//! Each image draws its random numbers from its own stream seeded by its seed, so an image depends on its
//! seed only, never on the batch it was generated in.
mod canvas;
mod draw;
mod score;
pub mod seams;
mod slices;
#[cfg(feature = "torch")]
mod tensors;
pub mod windows;

use crate::config::{PipelineConfig, StageKind, StageSpec};
use crate::decode::host::condition;
pub use crate::decode::Decoding;
use crate::decode::{Engine, Network, SliceBatch};
use crate::error::{Error, Result};
use crate::subscale::{from_slices_host, merge_value, split_value, to_slices_host};
pub use canvas::{
    check_canvas_size, default_overlap, draw_seed, upscale_factor, CanvasImage, CanvasJob,
    MAX_CANVAS_PIXELS, MAX_UPSCALE_FACTOR,
};
pub use draw::{draw, Pick};
use rand::{Rng, SeedableRng};
pub use score::Score;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
#[cfg(feature = "torch")]
pub use tensors::Samples;

/// Stops a running job from any thread; checked before every pixel.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Temperatures outside this range are refused: near 0 sampling is already greedy, and far beyond 1 it is
/// uniform noise.
/// (The bound is 1e-4 as an `f32`, so that hosts passing `1e-4f` through the C ABI are not refused.)
pub const MIN_TEMPERATURE: f64 = 1e-4f32 as f64;
pub const MAX_TEMPERATURE: f64 = 1e4;

#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub temperature: f64,
    pub batch_size: usize,
    pub decoding: Decoding,
    /// Stop every slice after this many positions (the images are then unfinished): for timing the slow
    /// engines on a sample of steps (`spn bench`). None: whole slices.
    pub positions_per_slice: Option<usize>,
    /// Pixels shared by neighbouring windows on a canvas larger than the model (rounded up to a multiple of
    /// the scale S); None: the measured default ([`canvas::default_overlap`]).
    pub overlap: Option<usize>,
    /// The CPU engine embeds slices in plain Rust (`decode::embed`); false: with libtorch, to compare them
    /// (`spn bench`).
    pub host_embedder: bool,
    /// How values are chosen: drawn (the default), or the distribution's mean level.
    pub pick: Pick,
    /// Independent draws averaged into each image, 1 to [`MAX_DRAWS`]: with several, an estimate of the
    /// posterior mean image, which minimises the expected squared error over whole images where
    /// [`Pick::Mean`] does so one sub-pixel at a time given the earlier choices (models/README.md, "Averaged
    /// draws"). Known pixels stay exact. 1: one draw.
    pub draws: usize,
}

/// The most draws averaged into one image: beyond a few dozen the estimate's noise is far below a level.
pub const MAX_DRAWS: usize = 64;

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            batch_size: 16,
            decoding: Decoding::Incremental,
            positions_per_slice: None,
            overlap: None,
            host_embedder: true,
            pick: Pick::Sample,
            draws: 1,
        }
    }
}

/// Where a job is; reported once per row of every slice.
#[derive(Clone, Debug)]
pub struct SampleProgress {
    pub batch: usize,
    pub batches: usize,
    pub stage: &'static str,
    pub slice: i64,
    pub row: i64,
    pub rows: i64,
    /// Rows done and in all, over the whole job.
    pub done: u64,
    pub total: u64,
}

/// A job for images `(3, H, W)` of the model's size: start values and which sub-pixels are known, as MSB
/// and LSB masks (for a single-stage model only their conjunction counts). A batch's job holds one image per
/// seed; a job of tensors (`tensors.rs`) may hold one image for all.
struct Job {
    init: Vec<i64>,
    known_msb: Vec<bool>,
    known_lsb: Vec<bool>,
    /// Also run slices whose sub-pixels are all known (teacher forcing), rather than scoring them in one
    /// parallel pass.
    run_known: bool,
}

pub struct Sampler<'a> {
    config: &'a PipelineConfig,
    specs: Vec<StageSpec>,
    engine: Box<dyn Engine + 'a>,
    options: SampleOptions,
    /// Threads the noise is drawn on (`decode::host::threads`).
    threads: usize,
}

type ProgressFn<'p> = &'p mut dyn FnMut(&SampleProgress) -> bool;

impl<'a> Sampler<'a> {
    /// A sampler of `model` (a libtorch `Pipeline` or a plain-Rust `HostModel`) with the engine `options`
    /// ask for.
    pub fn new(model: &'a dyn Network, options: SampleOptions) -> Result<Self> {
        // The bounds keep T and 1/T comfortably inside f32, where the decoders work.
        if !(MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&options.temperature) {
            return Err(Error::input(format!(
                "temperature must be > 0, between 1e-4 and 1e4; got {}",
                options.temperature
            )));
        }
        if options.batch_size == 0 {
            return Err(Error::input("batch size must be at least 1"));
        }
        if !(1..=MAX_DRAWS).contains(&options.draws) {
            return Err(Error::input(format!(
                "draws averaged into an image must be between 1 and {MAX_DRAWS}; got {}",
                options.draws
            )));
        }
        if options.draws > 1 && options.pick == Pick::Mean {
            return Err(Error::input(
                "averaging draws needs drawn values: the mean level gives the same image every draw",
            ));
        }
        let engine = model.engine(options.decoding, options.host_embedder)?;
        let config = model.config();
        Ok(Self {
            config,
            specs: config.stages(),
            engine,
            options,
            threads: crate::decode::host::threads(),
        })
    }

    /// Which engine decodes: `cpu`, `tensor` or `naive`.
    pub fn decoder_name(&self) -> &'static str {
        self.engine.name()
    }

    pub fn config(&self) -> &PipelineConfig {
        self.config
    }

    pub fn options(&self) -> &SampleOptions {
        &self.options
    }

    /// The model's image size `(H, W)`.
    fn hw(&self) -> (usize, usize) {
        (self.config.height as usize, self.config.width as usize)
    }

    fn check_seeds(seeds: &[u64]) -> Result<()> {
        if seeds.is_empty() {
            return Err(Error::input("count must be at least 1"));
        }
        Ok(())
    }

    /// Samples one batch, one random stream per seed; returns its images `(B, 3, H, W)` and each one's bits.
    fn run_part(
        &self,
        part: &Job,
        seeds: &[u64],
        rows: &mut Rows,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<(Vec<u8>, Vec<f64>)> {
        let mut batch = Batch {
            rngs: seeds
                .iter()
                .map(|&s| rand_chacha::ChaCha8Rng::seed_from_u64(s))
                .collect(),
            log_probs: vec![0.0; seeds.len()],
            maps: None,
            threads: self.threads,
            rows,
            progress,
            cancel,
        };
        let img = self.run_batch(part, &mut batch)?;
        // The sampler's own log-probabilities of every sub-pixel, sampled or known: the exact likelihood
        // of the result (docs/design.md invariant 2), with no second pass over the image.
        let bits = batch
            .log_probs
            .iter()
            .map(|v| -v / std::f64::consts::LN_2)
            .collect();
        Ok((img, bits))
    }

    /// Rows that one batch runs, for progress totals.
    fn rows_per_batch(&self) -> u64 {
        self.specs
            .iter()
            .map(|s| ((s.slices() - s.first_slice) * s.slice_hw().0) as u64)
            .sum()
    }

    /// Runs every stage over one batch; returns its images `(B, 3, H, W)`.
    fn run_batch(&self, job: &Job, batch: &mut Batch) -> Result<Vec<u8>> {
        let (h, w) = self.hw();
        let s = self.config.scale as usize;
        let (km, kl) = (&job.known_msb, &job.known_lsb);
        // Current values: x for a single-stage model, (m, l) for a pipeline.
        let (mut m, mut l, kfull): (Vec<i64>, Vec<i64>, Vec<bool>) = match self.config.msb_bits {
            None => (
                job.init.clone(),
                vec![0; job.init.len()],
                km.iter().zip(kl).map(|(a, b)| *a && *b).collect(),
            ),
            Some(bits) => {
                let (m, l) = job.init.iter().map(|&v| split_value(v, bits)).unzip();
                (m, l, km.clone())
            }
        };
        for (si, spec) in self.specs.iter().enumerate() {
            // This stage's own values and known flags, as images of `size`, and its conditioning.
            let small = (h / s, w / s);
            let (own_img, known_img, size) = match spec.kind {
                StageKind::Full => (m.clone(), kfull.clone(), (h, w)),
                StageKind::Small => (slice0(&m, (h, w), s)?, slice0(km, (h, w), s)?, small),
                StageKind::SizeUp => (m.clone(), km.clone(), (h, w)),
                StageKind::DepthUp => (l.clone(), kl.clone(), (h, w)),
            };
            let cond = match spec.kind {
                StageKind::DepthUp => Some(to_slices_host(&m, (h, w), s)?),
                _ => None,
            };
            let sc = spec.scale as usize;
            let mut stage = Stage {
                spec,
                si,
                nll: batch.maps.as_ref().map(|_| vec![0.0; own_img.len()]),
                own: to_slices_host(&own_img, size, sc)?,
                known: to_slices_host(&known_img, size, sc)?,
                cond,
                run_known: job.run_known,
            };
            self.run_stage(&mut stage, batch)?;
            if let (Some(maps), Some(nll)) = (batch.maps.as_mut(), &stage.nll) {
                let img = from_slices_host(nll, size, sc)?;
                maps.push(match spec.kind {
                    // Stage A's image is slice 0 of the full-size image.
                    StageKind::Small => with_slice0(&vec![0.0; m.len()], &img, (h, w), s)?,
                    _ => img,
                });
            }
            let out = from_slices_host(&stage.own, size, sc)?;
            match spec.kind {
                StageKind::Full | StageKind::SizeUp => m = out,
                StageKind::DepthUp => l = out,
                StageKind::Small => m = with_slice0(&m, &out, (h, w), s)?,
            }
        }
        Ok(match self.config.msb_bits {
            None => m.iter().map(|&v| v.clamp(0, 255) as u8).collect(),
            Some(bits) => m
                .iter()
                .zip(&l)
                .map(|(&a, &b)| merge_value(a, b, bits).clamp(0, 255) as u8)
                .collect(),
        })
    }

    /// Every slice of one stage, in order: decoded where anything is unknown, else scored in one pass.
    fn run_stage(&self, st: &mut Stage, batch: &mut Batch) -> Result<()> {
        let spec = st.spec;
        let (h, w) = spec.slice_hw();
        let (h, w, nsl) = (h as usize, w as usize, spec.slices() as usize);
        let n = h * w;
        let b = st.own.len() / (3 * nsl * n);
        let levels = spec.levels() as usize;
        for k in spec.first_slice as usize..nsl {
            // The slice's values and known flags, channel-last `(B, n, 3)`.
            let at = |i: usize, c: usize, p: usize| ((i * 3 + c) * nsl + k) * n + p;
            let values: Vec<[i64; 3]> = (0..b * n)
                .map(|ip| {
                    let (i, p) = (ip / n, ip % n);
                    [0, 1, 2].map(|c| st.own[at(i, c, p)])
                })
                .collect();
            let known: Vec<u8> = (0..b * n * 3)
                .map(|x| st.known[at(x / (3 * n), x % 3, (x / 3) % n)] as u8)
                .collect();
            let ks = vec![k; b];
            let cond = condition(spec, &st.own, st.cond.as_deref(), &ks, (h, w))?;
            let input = SliceBatch {
                b,
                h,
                w,
                cin: cond.len() / (b * n).max(1),
                cond: &cond,
                ks: &ks,
                values: &values,
            };
            // Gumbel noise for every sub-pixel of the slice, from each image's own stream, drawn whether or
            // not the sub-pixel is known so that the streams never depend on the mask or the batch.
            if !st.run_known && known.iter().all(|&v| v != 0) {
                // Nothing to sample: score the slice in one parallel pass.
                batch.skip_noise(n * 3 * levels);
                let lp = self.engine.score(st.si, &input)?;
                for (a, v) in batch.log_probs.iter_mut().zip(lp.chunks_exact(n * 3)) {
                    *a += v.iter().map(|&x| x as f64).sum::<f64>();
                }
                if let Some(nll) = st.nll.as_mut() {
                    for (x, v) in lp.iter().enumerate() {
                        nll[at(x / (3 * n), x % 3, (x / 3) % n)] = -v;
                    }
                }
                batch.rows.done += h as u64;
                continue;
            }
            let gumbel = batch.gumbel(n * 3 * levels);
            let out = self.decode_slice(st.si, spec, k, &input, &gumbel, &known, batch)?;
            for (ip, v) in out.iter().enumerate() {
                let (i, p) = (ip / n, ip % n);
                for (c, &x) in v.iter().enumerate() {
                    st.own[at(i, c, p)] = x;
                }
            }
        }
        Ok(())
    }
}

/// Slice 0 of images `(lead, H, W)`: `(lead, H/S, W/S)`.
fn slice0<T: Copy + Default>(x: &[T], (h, w): (usize, usize), s: usize) -> Result<Vec<T>> {
    let sl = to_slices_host(x, (h, w), s)?;
    let n = (h / s) * (w / s);
    Ok(sl
        .chunks_exact(s * s * n)
        .flat_map(|c| c[..n].iter().copied())
        .collect())
}

/// Images `(lead, H, W)` with slice 0 replaced by `small` `(lead, H/S, W/S)`.
fn with_slice0<T: Copy + Default>(
    x: &[T],
    small: &[T],
    (h, w): (usize, usize),
    s: usize,
) -> Result<Vec<T>> {
    let mut sl = to_slices_host(x, (h, w), s)?;
    let n = (h / s) * (w / s);
    for (dst, src) in sl.chunks_exact_mut(s * s * n).zip(small.chunks_exact(n)) {
        dst[..n].copy_from_slice(src);
    }
    from_slices_host(&sl, (h, w), s)
}

/// One stage of one batch: its spec, its values and known flags as slice stacks `(B, 3, S*S, h, w)` (`own`
/// receives the result), and its conditioning (stage C: the MSB image's slice stack).
struct Stage<'s> {
    spec: &'s StageSpec,
    si: usize,
    /// When scoring: the nats of every sub-pixel of scored slices, as a slice stack like `own`.
    nll: Option<Vec<f32>>,
    own: Vec<i64>,
    known: Vec<bool>,
    cond: Option<Vec<i64>>,
    run_known: bool,
}

/// The state of one batch as it runs: its images' random streams and log-probabilities, and progress.
struct Batch<'r, 'p, 'c> {
    rngs: Vec<rand_chacha::ChaCha8Rng>,
    /// Natural log-probability of each image so far.
    log_probs: Vec<f64>,
    /// When scoring (`score.rs`): per stage, the nats of every sub-pixel in image coordinates `(B, 3, H, W)`.
    maps: Option<Vec<Vec<f32>>>,
    threads: usize,
    rows: &'r mut Rows,
    progress: ProgressFn<'p>,
    cancel: &'c CancelToken,
}

impl Batch<'_, '_, '_> {
    /// Gumbel noise (`draw::gumbel`), `per_image` values from each image's own stream, image after image;
    /// the images' streams are independent, so they are drawn on several threads.
    fn gumbel(&mut self, per_image: usize) -> Vec<f32> {
        let mut g = vec![0f32; self.rngs.len() * per_image];
        // Threads only where there is enough to share: starting one costs as much as ~10^4 values.
        let threads = if g.len() > 1 << 16 { self.threads } else { 1 };
        let per = self.rngs.len().div_ceil(threads).max(1);
        std::thread::scope(|sc| {
            for (rngs, out) in self
                .rngs
                .chunks_mut(per)
                .zip(g.chunks_mut(per * per_image.max(1)))
            {
                sc.spawn(move || {
                    for (r, o) in rngs.iter_mut().zip(out.chunks_mut(per_image.max(1))) {
                        for v in o.iter_mut() {
                            *v = draw::gumbel(r.gen_range(f32::MIN_POSITIVE..1.0f32));
                        }
                    }
                });
            }
        });
        g
    }

    /// Advances each image's stream past `per_image` values, as [`Self::gumbel`] would, for a slice that is
    /// scored rather than drawn: the streams stay the same, and no noise is made that nothing reads.
    fn skip_noise(&mut self, per_image: usize) {
        for r in self.rngs.iter_mut() {
            for _ in 0..per_image {
                let _: f32 = r.gen_range(f32::MIN_POSITIVE..1.0f32);
            }
        }
    }

    /// Reports a finished row of slice `k` of a stage; false: the caller asked to stop.
    fn row_done(&mut self, stage: &'static str, k: i64, row: i64, rows: i64) -> bool {
        self.rows.done += 1;
        let pr = SampleProgress {
            batch: self.rows.batch,
            batches: self.rows.batches,
            stage,
            slice: k,
            row,
            rows,
            done: self.rows.done,
            total: self.rows.total,
        };
        if (self.progress)(&pr) {
            true
        } else {
            self.cancel.cancel();
            false
        }
    }
}

/// Progress totals over a whole job.
struct Rows {
    done: u64,
    total: u64,
    batches: usize,
    batch: usize,
}

/// A progress callback that does nothing.
pub fn no_progress() -> impl FnMut(&SampleProgress) -> bool {
    |_| true
}

/// The seeds `seed..seed + count`: one image each. Refused rather than wrapped when they would run past
/// `u64::MAX` (they would repeat seeds already used).
pub fn seed_range(seed: u64, count: u64) -> Result<std::ops::RangeInclusive<u64>> {
    if count == 0 {
        return Err(Error::input("count must be at least 1"));
    }
    let last = seed.checked_add(count - 1).ok_or_else(|| {
        Error::input(format!(
            "seeds {seed} + {count} images run past the largest seed {}",
            u64::MAX
        ))
    })?;
    Ok(seed..=last)
}
