//! The sampler: generate, complete, upscale size, upscale depth. Every job runs the pipeline's stages in
//! subscale order, sub-pixel by sub-pixel, with known sub-pixels clamped to their values.
//!
//! Each image draws its random numbers from its own stream seeded by its seed, so an image depends on its
//! seed only, never on the batch it was generated in.
use crate::config::StageKind;
use crate::error::{Error, Result};
use crate::model::cpu_decoder::{to_vec, CpuSliceDecoder, CpuStepWeights};
use crate::model::incremental::{SliceDecoder, StepWeights};
use crate::model::{SpnNet, Values};
use crate::pipeline::Pipeline;
use crate::subscale::{from_slices, to_slices};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoding {
    /// Per-layer caches: each step computes only the new position. On the CPU this is the tensor-free
    /// decoder of [`crate::model::cpu_decoder`], elsewhere [`Decoding::IncrementalTensor`].
    Incremental,
    /// The same caches as tensor ops on the model's device: the path on GPUs; on the CPU kept as a second
    /// implementation the fast one is tested against.
    IncrementalTensor,
    /// A full decoder pass per pixel: the reference the incremental path is tested against.
    Naive,
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
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            batch_size: 16,
            decoding: Decoding::Incremental,
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

/// The per-stage weights of the decoder that runs, chosen once from the options and the device.
enum StepDecoder {
    Cpu(Vec<CpuStepWeights>),
    Tensor(Vec<StepWeights>),
    Naive,
}

pub struct Sampler<'a> {
    pipeline: &'a Pipeline,
    decoder: StepDecoder,
    pub options: SampleOptions,
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
        let stages = &pipeline.stages;
        let decoder = match (options.decoding, pipeline.device()) {
            (Decoding::Naive, _) => StepDecoder::Naive,
            (Decoding::Incremental, tch::Device::Cpu) => StepDecoder::Cpu(
                stages
                    .iter()
                    .map(CpuStepWeights::new)
                    .collect::<Result<_>>()?,
            ),
            _ => StepDecoder::Tensor(tch::no_grad(|| {
                stages.iter().map(StepWeights::new).collect::<Result<_>>()
            })?),
        };
        Ok(Self {
            pipeline,
            decoder,
            options,
        })
    }

    /// Which decoder runs: `cpu`, `tensor` or `naive`.
    pub fn decoder_name(&self) -> &'static str {
        match self.decoder {
            StepDecoder::Cpu(_) => "cpu",
            StepDecoder::Tensor(_) => "tensor",
            StepDecoder::Naive => "naive",
        }
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

    /// New images, one per seed.
    pub fn generate(
        &self,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        let job = Job {
            init: Tensor::f_zeros([1, 3, h, w], (Kind::Int64, tch::Device::Cpu))?
                .f_expand([seeds.len() as i64, 3, h, w], false)?,
            known_msb: self.bool_full(seeds.len(), false)?,
            known_lsb: self.bool_full(seeds.len(), false)?,
            run_known: false,
        };
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
            init: image
                .f_to_kind(Kind::Int64)?
                .f_unsqueeze(0)?
                .f_expand([n, 3, h, w], false)?,
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
        let n = seeds.len() as i64;
        let job = Job {
            init: image
                .f_to_kind(Kind::Int64)?
                .f_unsqueeze(0)?
                .f_expand([n, 3, h, w], false)?,
            known_msb: self.bool_full(seeds.len(), true)?,
            known_lsb: self.bool_full(seeds.len(), false)?,
            run_known: false,
        };
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
        let job = Job {
            init: images.f_to_kind(Kind::Int64)?,
            known_msb: self.bool_full(n, true)?,
            known_lsb: self.bool_full(n, true)?,
            run_known: true,
        };
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
        let rows_per_batch = self.rows_per_batch();
        let mut ctx = RunCtx {
            done: 0,
            total: rows_per_batch * batches as u64,
            batches,
            batch: 0,
        };
        let mut images = Vec::new();
        let mut bits = Vec::new();
        for (bi, chunk) in seeds.chunks(bs).enumerate() {
            ctx.batch = bi;
            let (a, b) = ((bi * bs) as i64, chunk.len() as i64);
            let part = Job {
                init: fresh(&job.init.f_narrow(0, a, b)?)?,
                known_msb: fresh(&job.known_msb.f_narrow(0, a, b)?)?,
                known_lsb: fresh(&job.known_lsb.f_narrow(0, a, b)?)?,
                run_known: job.run_known,
            };
            let (img, lp) =
                tch::no_grad(|| self.run_batch(&part, chunk, &mut ctx, progress, cancel))?;
            images.push(img);
            bits.extend(lp);
        }
        Ok(Samples {
            images: Tensor::f_cat(&images, 0)?,
            bits,
            seeds: seeds.to_vec(),
        })
    }

    /// Rows that one batch runs, for progress totals.
    fn rows_per_batch(&self) -> u64 {
        self.pipeline
            .stages
            .iter()
            .map(|net| ((net.spec.slices() - net.spec.first_slice) * net.spec.slice_hw().0) as u64)
            .sum()
    }

    fn run_batch(
        &self,
        job: &Job,
        seeds: &[u64],
        rc: &mut RunCtx,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<(Tensor, Vec<f64>)> {
        let p = self.pipeline;
        let dev = p.device();
        let b = seeds.len() as i64;
        let mut rngs: Vec<rand_chacha::ChaCha8Rng> = seeds
            .iter()
            .map(|&s| rand_chacha::ChaCha8Rng::seed_from_u64(s))
            .collect();
        let mut lp = Tensor::f_zeros([b], (Kind::Double, dev))?;
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
            let mut own = to_slices(&own_img, spec.scale)?.f_contiguous()?;
            let known = to_slices(&known_img, spec.scale)?.f_contiguous()?;
            let cond = match spec.kind {
                StageKind::DepthUp => Some(Values::Hard(to_slices(&m, s)?)),
                _ => None,
            };
            self.run_stage(
                net,
                si,
                &mut own,
                &known,
                cond.as_ref(),
                job.run_known,
                &mut rngs,
                &mut lp,
                rc,
                progress,
                cancel,
            )?;
            let out = from_slices(&own, spec.scale)?;
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
        // The sampler's own log-probabilities of every sub-pixel, sampled or known: the exact likelihood of
        // the result (docs/design.md invariant 2), with no second pass over the image.
        let lp = Vec::<f64>::try_from(lp.f_to_device(tch::Device::Cpu)?)?;
        let bits = lp.iter().map(|v| -v / std::f64::consts::LN_2).collect();
        Ok((
            img.f_to_kind(Kind::Uint8)?.f_to_device(tch::Device::Cpu)?,
            bits,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_stage(
        &self,
        net: &SpnNet,
        si: usize,
        own: &mut Tensor,
        known: &Tensor,
        cond: Option<&Values>,
        run_known: bool,
        rngs: &mut [rand_chacha::ChaCha8Rng],
        lp: &mut Tensor,
        rc: &mut RunCtx,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<()> {
        let spec = &net.spec;
        let dev = own.device();
        let (b, _, nsl, h, w) = own.size5()?;
        let levels = spec.levels();
        let temp = self.options.temperature;
        let n = h * w;
        for k in spec.first_slice..nsl {
            let known_k = known.f_select(2, k)?; // (B, 3, h, w)
                                                 // Gumbel noise for every sub-pixel of the slice, from each image's own stream, drawn whether or
                                                 // not the sub-pixel is known so that the streams never depend on the mask or the batch.
            let mut u = Vec::with_capacity((b * n * 3 * levels) as usize);
            for r in rngs.iter_mut() {
                for _ in 0..n * 3 * levels {
                    u.push(r.gen_range(f32::MIN_POSITIVE..1.0f32));
                }
            }
            if !run_known && known_k.f_all()?.f_int64_value(&[])? != 0 {
                // Nothing to sample: score the slice in one parallel pass.
                let kk = Tensor::f_full([b], k, (Kind::Int64, dev))?;
                let logits = net.logits(&Values::Hard(own.shallow_clone()), cond, &kk)?;
                let nll = crate::model::nll(&logits, &own.f_select(2, k)?)?;
                let _ = lp.f_sub_(&nll.f_sum_dim_intlist(
                    [1i64, 2, 3].as_slice(),
                    false,
                    Kind::Double,
                )?)?;
                rc.done += h as u64;
                continue;
            }
            let gumbel = Tensor::f_from_slice(&u)?
                .f_to_device(dev)?
                .f_view([b, n, 3, levels])?
                .f_log()?
                .f_neg()?
                .f_log()?
                .f_neg()?;
            let any_known = known_k.f_any()?.f_int64_value(&[])? != 0;
            let kk = Tensor::f_full([b], k, (Kind::Int64, dev))?;
            let own_v = Values::Hard(own.shallow_clone());
            let ctx = net.context(&own_v, cond, &kk)?;
            let target = own.f_select(2, k)?; // a view: writes go into `own`
            let mut inc = match &self.decoder {
                StepDecoder::Cpu(cw) => {
                    let slice = SliceJob {
                        net,
                        weights: &cw[si],
                        ctx: &ctx,
                        gumbel: &gumbel,
                        known: &known_k,
                        target: &target,
                        any_known,
                        k,
                    };
                    self.decode_slice_cpu(&slice, lp, rc, progress, cancel)?;
                    continue;
                }
                StepDecoder::Tensor(tw) => Some(SliceDecoder::new(net, &tw[si], &ctx)?),
                StepDecoder::Naive => None,
            };
            let known_flat = known_k.f_flatten(2, 3)?; // (B, 3, n)
            let target_flat = target.f_flatten(2, 3)?;
            for pos in 0..n {
                if cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let feats = match inc.as_mut() {
                    Some(d) => d.features(pos)?,
                    None => {
                        let x = Values::Hard(target.shallow_clone()).normalized(levels)?;
                        let trunk = net.decoder.forward(&x, &ctx)?;
                        let t = net.head.trunk(&trunk)?; // (B, h, w, D)
                        t.f_select(1, pos / w)?
                            .f_select(1, pos % w)?
                            .f_view([b, 1, 1, -1])?
                    }
                };
                let g = gumbel.f_select(1, pos)?; // (B, 3, L)
                let (kv, tv) = if any_known {
                    (
                        Some(known_flat.f_select(2, pos)?),
                        Some(target_flat.f_select(2, pos)?),
                    )
                } else {
                    (None, None)
                };
                let mut chosen: Vec<Values> = Vec::with_capacity(3);
                let mut vals = Vec::with_capacity(3);
                for ch in 0..3i64 {
                    let logits = net
                        .head
                        .channel_logits(&feats, ch as usize, &chosen)?
                        .f_view([b, levels])?;
                    // Gumbel-max: argmax(logits / T + G) = argmax(logits + T G) is a draw from
                    // softmax(logits / T); the second form never divides by a small T.
                    let drawn = logits
                        .f_add(&g.f_select(1, ch)?.f_mul_scalar(temp)?)?
                        .f_argmax(-1, false)?;
                    let v = match (&kv, &tv) {
                        (Some(kv), Some(tv)) => tv
                            .f_select(1, ch)?
                            .f_where_self(&kv.f_select(1, ch)?, &drawn)?,
                        _ => drawn,
                    };
                    let logp = logits
                        .f_log_softmax(-1, Kind::Float)?
                        .f_gather(1, &v.f_unsqueeze(1)?, false)?
                        .f_squeeze_dim(1)?;
                    let _ = lp.f_add_(&logp.f_to_kind(Kind::Double)?)?;
                    chosen.push(Values::Hard(v.f_view([b, 1, 1])?));
                    vals.push(v);
                }
                let px = Tensor::f_stack(&vals, 1)?; // (B, 3)
                target_flat.f_select(2, pos)?.f_copy_(&px)?;
                if let Some(d) = inc.as_mut() {
                    d.commit(pos, &px)?;
                }
                if (pos + 1) % w == 0 {
                    rc.done += 1;
                    let pr = SampleProgress {
                        batch: rc.batch,
                        batches: rc.batches,
                        stage: spec.kind.name(),
                        slice: k,
                        row: pos / w,
                        rows: h,
                        done: rc.done,
                        total: rc.total,
                    };
                    if !progress(&pr) {
                        cancel.cancel();
                        return Err(Error::Cancelled);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One slice of one batch for the CPU decoder.
struct SliceJob<'s> {
    net: &'s SpnNet,
    weights: &'s CpuStepWeights,
    /// Slice context `(B, D, h, w)`.
    ctx: &'s Tensor,
    /// Gumbel noise `(B, n, 3, L)`.
    gumbel: &'s Tensor,
    /// Known sub-pixels and the slice's values `(B, 3, h, w)`; `target` is a view that receives the result.
    known: &'s Tensor,
    target: &'s Tensor,
    any_known: bool,
    k: i64,
}

/// One thread's share of a slice: a contiguous group of images, channel-last.
struct Group<'g> {
    ctx: &'g [f32],
    proj: &'g [f32],
    gumbel: &'g [f32],
    known: &'g [u8],
    values: &'g mut [[i64; 3]],
    log_probs: &'g mut [f64],
}

/// `(B, C, h, w)` -> `(B, h * w, C)` as a flat vector.
fn channel_last_f32(t: &Tensor) -> Result<Vec<f32>> {
    to_vec(&t.f_flatten(2, 3)?.f_transpose(1, 2)?)
}

impl Sampler<'_> {
    /// Decodes one slice with the CPU decoder, the batch split into one group of images per thread. The
    /// calling thread decodes the first group and reports progress; the others only watch `cancel`.
    fn decode_slice_cpu(
        &self,
        job: &SliceJob,
        lp: &mut Tensor,
        rc: &mut RunCtx,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<()> {
        let (b, d, h, w) = job.ctx.size4()?;
        let (b, n, d) = (b as usize, (h * w) as usize, d as usize);
        let levels = job.weights.levels();
        let pw = job.weights.proj_width();
        let ctx = channel_last_f32(job.ctx)?;
        let proj = channel_last_f32(&crate::model::layers::conv2d_same(
            job.ctx,
            &job.net.decoder.context,
        )?)?;
        let gumbel = to_vec(job.gumbel)?;
        let known = Vec::<u8>::try_from(
            &job.known
                .f_flatten(2, 3)?
                .f_transpose(1, 2)?
                .f_to_kind(Kind::Uint8)?
                .f_contiguous()?
                .f_flatten(0, -1)?,
        )?;
        let flat = Vec::<i64>::try_from(
            &job.target
                .f_flatten(2, 3)?
                .f_transpose(1, 2)?
                .f_contiguous()?
                .f_flatten(0, -1)?,
        )?;
        let mut values: Vec<[i64; 3]> = flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        let mut log_probs = vec![0f64; b];
        let threads = (tch::get_num_threads().max(1) as usize).min(b);
        // Split the batch into `threads` contiguous groups of near-equal size.
        let mut groups = Vec::with_capacity(threads);
        {
            let (mut vals, mut lps) = (values.as_mut_slice(), log_probs.as_mut_slice());
            let mut start = 0;
            for t in 0..threads {
                let size = b / threads + usize::from(t < b % threads);
                let (v, rest) = vals.split_at_mut(size * n);
                let (l, lrest) = lps.split_at_mut(size);
                (vals, lps) = (rest, lrest);
                groups.push(Group {
                    ctx: &ctx[start * n * d..(start + size) * n * d],
                    proj: &proj[start * n * pw..(start + size) * n * pw],
                    gumbel: &gumbel[start * n * 3 * levels..(start + size) * n * 3 * levels],
                    known: &known[start * n * 3..(start + size) * n * 3],
                    values: v,
                    log_probs: l,
                });
                start += size;
            }
        }
        let temp = self.options.temperature as f32;
        let any_known = job.any_known;
        let weights = job.weights;
        let stage = job.net.spec.kind.name();
        let mut groups = groups.into_iter();
        let first = groups.next();
        std::thread::scope(|sc| -> Result<()> {
            let workers: Vec<_> = groups
                .map(|g| {
                    sc.spawn(move || {
                        decode_group(weights, g, temp, any_known, cancel, &mut |_| true)
                    })
                })
                .collect();
            let mut first_result = Ok(());
            if let Some(g) = first {
                first_result = decode_group(weights, g, temp, any_known, cancel, &mut |row| {
                    rc.done += 1;
                    let pr = SampleProgress {
                        batch: rc.batch,
                        batches: rc.batches,
                        stage,
                        slice: job.k,
                        row: row as i64,
                        rows: h,
                        done: rc.done,
                        total: rc.total,
                    };
                    if progress(&pr) {
                        true
                    } else {
                        cancel.cancel();
                        false
                    }
                });
            }
            for wk in workers {
                match wk.join() {
                    Ok(r) => r?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            first_result
        })?;
        let flat: Vec<i64> = values.iter().flatten().copied().collect();
        job.target.shallow_clone().f_copy_(
            &Tensor::f_from_slice(&flat)?
                .f_view([b as i64, h, w, 3])?
                .f_permute([0, 3, 1, 2])?
                .f_to_device(job.target.device())?,
        )?;
        let _ = lp.f_add_(&Tensor::f_from_slice(&log_probs)?.f_to_device(lp.device())?)?;
        Ok(())
    }
}

/// Samples one group of images through a slice: Gumbel-max per channel, known sub-pixels clamped, and the
/// log-probability of every chosen value accumulated. `on_row` runs after each row; false stops the work.
fn decode_group(
    weights: &CpuStepWeights,
    g: Group,
    temp: f32,
    any_known: bool,
    cancel: &CancelToken,
    on_row: &mut dyn FnMut(usize) -> bool,
) -> Result<()> {
    let size = g.log_probs.len();
    let (n, w, l) = (weights.positions(), weights.width(), weights.levels());
    let mut dec = CpuSliceDecoder::new(weights, size, g.ctx, g.proj);
    let mut chosen = vec![[0i64; 3]; size];
    for pos in 0..n {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        dec.features(pos);
        for ch in 0..3 {
            let logits = dec.channel_logits(ch, &chosen);
            for (i, c) in chosen.iter_mut().enumerate() {
                let row = &logits[i * l..][..l];
                let gum = &g.gumbel[((i * n + pos) * 3 + ch) * l..][..l];
                // Gumbel-max: argmax(logits / T + G) = argmax(logits + T G) is a draw from
                // softmax(logits / T); the second form never divides by a small T.
                let mut best = 0;
                let mut best_v = f32::NEG_INFINITY;
                for (j, (lg, gv)) in row.iter().zip(gum).enumerate() {
                    let v = lg + temp * gv;
                    if v > best_v {
                        best_v = v;
                        best = j;
                    }
                }
                let v = if any_known && g.known[(i * n + pos) * 3 + ch] != 0 {
                    g.values[i * n + pos][ch]
                } else {
                    best as i64
                };
                let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|x| (x - mx).exp()).sum();
                let logp = row[v.clamp(0, l as i64 - 1) as usize] - mx - sum.ln();
                g.log_probs[i] += logp as f64;
                c[ch] = v;
            }
        }
        for (i, c) in chosen.iter().enumerate() {
            g.values[i * n + pos] = *c;
        }
        dec.commit(pos, &chosen);
        if (pos + 1) % w == 0 && !on_row(pos / w) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}

struct RunCtx {
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
