//! The sampler: generate, complete, upscale size, upscale depth. Every job runs the pipeline's stages in
//! subscale order, sub-pixel by sub-pixel, with known sub-pixels clamped to their values.
//!
//! Each image draws its random numbers from its own stream seeded by its seed, so an image depends on its
//! seed only, never on the batch it was generated in.
mod canvas;
mod draw;
pub mod seams;
mod slices;
pub mod windows;

use crate::config::StageKind;
pub use crate::decode::Decoding;
use crate::decode::Engine;
use crate::error::{Error, Result};
use crate::model::{SpnNet, Values};
use crate::pipeline::Pipeline;
use crate::subscale::{from_slices, to_slices};
pub use canvas::{check_canvas_size, default_overlap, CanvasImage, CanvasJob, MAX_CANVAS_PIXELS};
pub use draw::draw;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Kind, Tensor};

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

/// One image `(3, H, W)` as the start of `n` images: an expanded view (see [`fresh`]).
fn repeat(image: &Tensor, n: usize) -> Result<Tensor> {
    let (c, h, w) = image.size3()?;
    Ok(image
        .f_to_kind(Kind::Int64)?
        .f_unsqueeze(0)?
        .f_expand([n as i64, c, h, w], false)?)
}

/// A batch's own copy of its part of a job: job tensors are often expanded views of one image, or the
/// caller's tensor, and a batch writes into what it gets.
fn fresh(t: &Tensor) -> Result<Tensor> {
    let mut r = t.f_empty_like()?;
    r.f_copy_(t)?;
    Ok(r)
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
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            batch_size: 16,
            decoding: Decoding::Incremental,
            positions_per_slice: None,
            overlap: None,
            host_embedder: true,
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

/// The output of a job: `(N, 3, H, W)` uint8 images, and each one's bits under the model
/// (-log2 p of the whole image, over the slices that were run).
pub struct Samples {
    pub images: Tensor,
    pub bits: Vec<f64>,
    pub seeds: Vec<u64>,
}

/// A job: start values and which sub-pixels are known, as MSB and LSB masks (for a single-stage model
/// only their conjunction counts).
struct Job {
    init: Tensor,
    known_msb: Tensor,
    known_lsb: Tensor,
    /// Also run slices whose sub-pixels are all known (teacher forcing), rather than scoring them in one
    /// parallel pass.
    run_known: bool,
}

pub struct Sampler<'a> {
    pipeline: &'a Pipeline,
    engine: Engine,
    options: SampleOptions,
}

type ProgressFn<'p> = &'p mut dyn FnMut(&SampleProgress) -> bool;

impl<'a> Sampler<'a> {
    pub fn new(pipeline: &'a Pipeline, options: SampleOptions) -> Result<Self> {
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
        let engine = Engine::new(pipeline, options.decoding, options.host_embedder)?;
        Ok(Self {
            pipeline,
            engine,
            options,
        })
    }

    /// Which engine decodes: `cpu`, `tensor` or `naive`.
    pub fn decoder_name(&self) -> &'static str {
        self.engine.name()
    }

    pub fn pipeline(&self) -> &Pipeline {
        self.pipeline
    }

    pub fn options(&self) -> &SampleOptions {
        &self.options
    }

    fn hw(&self) -> (i64, i64) {
        (self.pipeline.config.height, self.pipeline.config.width)
    }

    fn check_seeds(seeds: &[u64]) -> Result<()> {
        if seeds.is_empty() {
            return Err(Error::input("count must be at least 1"));
        }
        Ok(())
    }

    /// An `(n, 3, H, W)` view of one image's worth of memory; `run` materialises one batch at a time, so
    /// a large count never holds the whole job in memory.
    fn bool_full(&self, n: usize, v: bool) -> Result<Tensor> {
        let (h, w) = self.hw();
        Ok(
            Tensor::f_full([1, 3, h, w], v as i64, (Kind::Bool, tch::Device::Cpu))?
                .f_expand([n as i64, 3, h, w], false)?,
        )
    }

    /// A job whose MSBs and LSBs are each all known or all drawn; with everything known, every slice is still
    /// run position by position (teacher forcing).
    fn uniform_job(&self, init: Tensor, msb_known: bool, lsb_known: bool) -> Result<Job> {
        let n = init.size()[0] as usize;
        Ok(Job {
            init,
            known_msb: self.bool_full(n, msb_known)?,
            known_lsb: self.bool_full(n, lsb_known)?,
            run_known: msb_known && lsb_known,
        })
    }

    /// New images, one per seed.
    pub fn generate(
        &self,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        let blank = Tensor::f_zeros([3, h, w], (Kind::Int64, tch::Device::Cpu))?;
        let job = self.uniform_job(repeat(&blank, seeds.len())?, false, false)?;
        self.run(job, seeds, progress, cancel)
    }

    /// Completes `image` `(3, H, W)` where `known` `(H, W)` (bool) is false; known pixels are kept exactly.
    pub fn complete(
        &self,
        image: &Tensor,
        known: &Tensor,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        self.check_image(image, h, w, "image")?;
        if known.size() != [h, w] {
            return Err(Error::input(format!(
                "mask is {:?}; it must be {w}x{h} like the image",
                known.size()
            )));
        }
        let known = known.f_to_kind(Kind::Bool)?;
        if known.f_all()?.f_int64_value(&[])? != 0 {
            log::warn!("the mask marks every pixel as known: there is nothing to complete");
        }
        let n = seeds.len() as i64;
        let k = known.f_view([1, 1, h, w])?.f_expand([n, 3, h, w], false)?;
        let job = Job {
            init: repeat(image, seeds.len())?,
            known_msb: k.shallow_clone(),
            known_lsb: k,
            run_known: false,
        };
        self.run(job, seeds, progress, cancel)
    }

    /// A small image `(3, H/S, W/S)` becomes slice 0 of a full-size image (kept exactly); the other slices
    /// are sampled.
    pub fn upscale_size(
        &self,
        small: &Tensor,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        let s = self.pipeline.config.scale;
        if s == 1 {
            return Err(Error::input(
                "this model has scale 1: there is no size to upscale",
            ));
        }
        self.check_image(small, h / s, w / s, "small image")?;
        let n = seeds.len() as i64;
        let opts = (Kind::Int64, tch::Device::Cpu);
        let sl = Tensor::f_zeros([1, 3, s * s, h / s, w / s], opts)?;
        sl.f_select(2, 0)?
            .f_copy_(&small.f_to_kind(Kind::Int64)?.f_unsqueeze(0)?)?;
        let init = from_slices(&sl, s)?.f_expand([n, 3, h, w], false)?;
        let ks = Tensor::f_zeros([1, 3, s * s, h / s, w / s], opts)?;
        let _ = ks.f_select(2, 0)?.f_fill_(1)?;
        let known = from_slices(&ks, s)?
            .f_to_kind(Kind::Bool)?
            .f_expand([n, 3, h, w], false)?;
        let job = Job {
            init,
            known_msb: known.shallow_clone(),
            known_lsb: known,
            run_known: false,
        };
        self.run(job, seeds, progress, cancel)
    }

    /// Keeps the top b bits of every value of `image` `(3, H, W)` exactly and samples the low bits.
    pub fn upscale_depth(
        &self,
        image: &Tensor,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        if self.pipeline.config.msb_bits.is_none() {
            return Err(Error::input(
                "this model is a single-stage 8-bit SPN: it has no depth-upscaling stage",
            ));
        }
        let (h, w) = self.hw();
        self.check_image(image, h, w, "image")?;
        let job = self.uniform_job(repeat(image, seeds.len())?, true, false)?;
        self.run(job, seeds, progress, cancel)
    }

    /// Bits of each image `(N, 3, H, W)` computed by the sampler itself, teacher-forced (every sub-pixel
    /// known): equals the parallel NLL.
    pub fn teacher_forced_bits(
        &self,
        images: &Tensor,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Vec<f64>> {
        let n = images.size()[0] as usize;
        // Every sub-pixel known, and every slice still run step by step (teacher forcing).
        let job = self.uniform_job(images.f_to_kind(Kind::Int64)?, true, true)?;
        Ok(self.run(job, &vec![0; n], progress, cancel)?.bits)
    }

    fn check_image(&self, t: &Tensor, h: i64, w: i64, what: &str) -> Result<()> {
        if t.size() != [3, h, w] {
            let s = t.size();
            let got = if s.len() == 3 {
                format!("{}x{}", s[2], s[1])
            } else {
                format!("{s:?}")
            };
            return Err(Error::input(format!(
                "{what} is {got}; this model needs {w}x{h}"
            )));
        }
        Ok(())
    }

    fn run(
        &self,
        job: Job,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        let n = seeds.len();
        let bs = self.options.batch_size;
        let batches = n.div_ceil(bs);
        let mut rows = Rows {
            done: 0,
            total: self.rows_per_batch() * batches as u64,
            batches,
            batch: 0,
        };
        let mut images = Vec::new();
        let mut bits = Vec::new();
        for (bi, chunk) in seeds.chunks(bs).enumerate() {
            rows.batch = bi;
            let (a, b) = ((bi * bs) as i64, chunk.len() as i64);
            let part = Job {
                init: fresh(&job.init.f_narrow(0, a, b)?)?,
                known_msb: fresh(&job.known_msb.f_narrow(0, a, b)?)?,
                known_lsb: fresh(&job.known_lsb.f_narrow(0, a, b)?)?,
                run_known: job.run_known,
            };
            let (img, b) = self.run_part(&part, chunk, &mut rows, &mut *progress, cancel)?;
            images.push(img);
            bits.extend(b);
        }
        Ok(Samples {
            images: Tensor::f_cat(&images, 0)?,
            bits,
            seeds: seeds.to_vec(),
        })
    }

    /// Samples one batch (its own tensors, written into), one random stream per seed; returns its images
    /// `(B, 3, H, W)` uint8 and each one's bits.
    fn run_part(
        &self,
        part: &Job,
        seeds: &[u64],
        rows: &mut Rows,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<(Tensor, Vec<f64>)> {
        let mut batch = Batch {
            rngs: seeds
                .iter()
                .map(|&s| rand_chacha::ChaCha8Rng::seed_from_u64(s))
                .collect(),
            log_probs: vec![0.0; seeds.len()],
            rows,
            progress,
            cancel,
        };
        let img = tch::no_grad(|| self.run_batch(part, &mut batch))?;
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
        self.pipeline
            .stages
            .iter()
            .map(|net| ((net.spec.slices() - net.spec.first_slice) * net.spec.slice_hw().0) as u64)
            .sum()
    }

    /// Runs every stage over one batch; returns its images `(B, 3, H, W)` uint8 on the CPU.
    fn run_batch(&self, job: &Job, batch: &mut Batch) -> Result<Tensor> {
        let p = self.pipeline;
        let dev = p.device();
        let init = job.init.f_to_device(dev)?;
        let (km, kl) = (
            job.known_msb.f_to_device(dev)?,
            job.known_lsb.f_to_device(dev)?,
        );
        // Current values: x for a single-stage model, (m, l) for a pipeline.
        let (mut m, mut l, kfull) = match p.config.msb_bits {
            None => (
                init.shallow_clone(),
                Tensor::f_zeros_like(&init)?,
                km.f_logical_and(&kl)?,
            ),
            Some(bits) => {
                let (m, l) = crate::subscale::split_depth(&init, bits)?;
                (m, l, km.shallow_clone())
            }
        };
        let s = p.config.scale;
        for (si, net) in p.stages.iter().enumerate() {
            let spec = &net.spec;
            // This stage's own values and known mask as slice stacks, and its conditioning.
            let (own_img, known_img) = match spec.kind {
                StageKind::Full => (m.shallow_clone(), kfull.shallow_clone()),
                StageKind::Small => (
                    to_slices(&m, s)?.f_select(2, 0)?,
                    to_slices(&km, s)?.f_select(2, 0)?,
                ),
                StageKind::SizeUp => (m.shallow_clone(), km.shallow_clone()),
                StageKind::DepthUp => (l.shallow_clone(), kl.shallow_clone()),
            };
            let cond = match spec.kind {
                StageKind::DepthUp => Some(Values::Hard(to_slices(&m, s)?)),
                _ => None,
            };
            let stage = Stage {
                net,
                si,
                own: to_slices(&own_img, spec.scale)?.f_contiguous()?,
                known: to_slices(&known_img, spec.scale)?.f_contiguous()?,
                cond,
                run_known: job.run_known,
            };
            self.run_stage(&stage, batch)?;
            let out = from_slices(&stage.own, spec.scale)?;
            match spec.kind {
                StageKind::Full | StageKind::SizeUp => m = out,
                StageKind::DepthUp => l = out,
                StageKind::Small => {
                    let ms = to_slices(&m, s)?.f_contiguous()?;
                    ms.f_select(2, 0)?.f_copy_(&out)?;
                    m = from_slices(&ms, s)?;
                }
            }
        }
        let img = match p.config.msb_bits {
            None => m,
            Some(bits) => crate::subscale::merge_depth(&m, &l, bits)?,
        };
        Ok(img.f_to_kind(Kind::Uint8)?.f_to_device(tch::Device::Cpu)?)
    }

    /// Every slice of one stage, in order: decoded where anything is unknown, else scored in one pass.
    fn run_stage(&self, st: &Stage, batch: &mut Batch) -> Result<()> {
        let spec = &st.net.spec;
        let dev = st.own.device();
        let (b, _, nsl, h, w) = st.own.size5()?;
        for k in spec.first_slice..nsl {
            let known_k = st.known.f_select(2, k)?; // (B, 3, h, w)
                                                    // Gumbel noise for every sub-pixel of the slice, from each image's own stream, drawn whether or
                                                    // not the sub-pixel is known so that the streams never depend on the mask or the batch.
            let gumbel = batch.gumbel((h * w * 3 * spec.levels()) as usize)?;
            let kk = Tensor::f_full([b], k, (Kind::Int64, dev))?;
            let own_v = Values::Hard(st.own.shallow_clone());
            if !st.run_known && known_k.f_all()?.f_int64_value(&[])? != 0 {
                // Nothing to sample: score the slice in one parallel pass.
                let logits = st.net.logits(&own_v, st.cond.as_ref(), &kk)?;
                let nll = crate::model::nll(&logits, &st.own.f_select(2, k)?)?.f_sum_dim_intlist(
                    [1i64, 2, 3].as_slice(),
                    false,
                    Kind::Double,
                )?;
                for (lp, v) in batch.log_probs.iter_mut().zip(Vec::<f64>::try_from(&nll)?) {
                    *lp -= v;
                }
                batch.rows.done += h as u64;
                continue;
            }
            let embed_in = st.net.condition(&own_v, st.cond.as_ref(), &kk)?;
            let slice = Slice {
                net: st.net,
                si: st.si,
                k,
                embed_in,
                kk,
                gumbel,
                known: known_k,
                target: st.own.f_select(2, k)?, // a view: writes go into `own`
            };
            self.decode_slice(&slice, batch)?;
        }
        Ok(())
    }
}

/// One stage of one batch: its network, its values and known flags as slice stacks `(B, 3, S*S, h, w)`
/// (`own` receives the result), and its conditioning.
struct Stage<'n> {
    net: &'n SpnNet,
    si: usize,
    own: Tensor,
    known: Tensor,
    cond: Option<Values>,
    run_known: bool,
}

/// The state of one batch as it runs: its images' random streams and log-probabilities, and progress.
struct Batch<'r, 'p, 'c> {
    rngs: Vec<rand_chacha::ChaCha8Rng>,
    /// Natural log-probability of each image so far.
    log_probs: Vec<f64>,
    rows: &'r mut Rows,
    progress: ProgressFn<'p>,
    cancel: &'c CancelToken,
}

impl Batch<'_, '_, '_> {
    /// Gumbel noise `-log(-log(u))`, `per_image` values from each image's own stream, image after image.
    fn gumbel(&mut self, per_image: usize) -> Result<Vec<f32>> {
        let mut u = Vec::with_capacity(self.rngs.len() * per_image);
        for r in self.rngs.iter_mut() {
            for _ in 0..per_image {
                u.push(r.gen_range(f32::MIN_POSITIVE..1.0f32));
            }
        }
        let g = Tensor::f_from_slice(&u)?
            .f_log()?
            .f_neg()?
            .f_log()?
            .f_neg()?;
        Ok(Vec::<f32>::try_from(&g)?)
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

/// One slice of one batch to decode.
struct Slice<'n> {
    net: &'n SpnNet,
    si: usize,
    k: i64,
    /// The embedder's input `(B, cin, h, w)` (`SpnNet::condition`) and each image's target slice `(B,)`.
    embed_in: Tensor,
    kk: Tensor,
    /// Gumbel noise, `(B, h * w, 3, L)` row-major.
    gumbel: Vec<f32>,
    /// Known sub-pixels `(B, 3, h, w)`; `target` holds the slice's values and receives the result.
    known: Tensor,
    target: Tensor,
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
