//! The CPU engine without libtorch: the slice embedder (`embed`), the step decoder (`cpu`) and the full pass
//! that scores known slices (`full`), all on host arrays, built from a bundle's weights read with the
//! `safetensors` crate. It is the engine libspn runs on CPU hosts (issue 18); a libtorch `Pipeline` on the CPU
//! builds the same engine from its own weights.
use super::cpu::{CpuSliceDecoder, CpuStepWeights};
use super::embed::HostEmbedder;
use super::full::FullPass;
use super::neighbours;
use super::{Decoding, Engine, Network, PreparedSlice, SliceBatch, SliceDecoding};
use crate::bundle::{self, TrainingInfo};
use crate::config::{PipelineConfig, StageSpec};
use crate::error::{Error, Result};
use crate::weights::Weights;
use std::path::Path;

/// One stage's weights, arranged for each part of the CPU engine.
struct Stage {
    spec: StageSpec,
    step: CpuStepWeights,
    embed: HostEmbedder,
    full: FullPass,
}

/// The CPU engine for every stage of a pipeline.
pub struct CpuEngine {
    stages: Vec<Stage>,
    threads: usize,
}

impl CpuEngine {
    /// From the pipeline's weights (names as a bundle stores them, `a.decoder.input.weight`), each held to
    /// the shape `config` gives it.
    pub fn new(config: &PipelineConfig, weights: &Weights) -> Result<Self> {
        let stages = config
            .stages()
            .iter()
            .map(|spec| {
                let w = weights.under(spec.kind.name());
                Ok(Stage {
                    spec: spec.clone(),
                    step: CpuStepWeights::new(spec, &w)?,
                    embed: HostEmbedder::new(spec, &w)?,
                    full: FullPass::new(spec, &w)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            stages,
            threads: threads(),
        })
    }

    fn stage(&self, si: usize) -> Result<&Stage> {
        self.stages
            .get(si)
            .ok_or_else(|| Error::Other(format!("no stage {si}")))
    }

    /// Each image's context `(n, D)` and projection `(n, proj_width)`, channel-last, the images split over
    /// threads.
    pub(crate) fn context(&self, si: usize, input: &SliceBatch) -> Result<(Vec<f32>, Vec<f32>)> {
        let e = &self.stage(si)?.embed;
        let (b, n) = (input.b, input.h * input.w);
        if input.cin != e.cin() || input.cond.len() != b * n * input.cin || input.ks.len() != b {
            return Err(Error::Other(format!(
                "embedder input of {} values with {} channels, not {b} images of {n} positions and {} channels",
                input.cond.len(),
                input.cin,
                e.cin()
            )));
        }
        let (d, pw, cin) = (e.d(), e.proj_width(), input.cin);
        let (mut ctx, mut proj) = (vec![0.0f32; b * n * d], vec![0.0f32; b * n * pw]);
        let per = b.div_ceil(self.groups(b));
        std::thread::scope(|sc| -> Result<()> {
            let jobs: Vec<_> = ctx
                .chunks_mut(per * n * d)
                .zip(proj.chunks_mut(per * n * pw))
                .enumerate()
                .map(|(g, (cx, pj))| {
                    sc.spawn(move || -> Result<()> {
                        // A few images per call: their patches stay in cache, and the weights are
                        // packed once for them.
                        const IMAGES: usize = EMBED_IMAGES_PER_CALL;
                        for (j, (c1, p1)) in cx
                            .chunks_mut(IMAGES * n * d)
                            .zip(pj.chunks_mut(IMAGES * n * pw))
                            .enumerate()
                        {
                            let first = g * per + j * IMAGES;
                            let imgs = first..first + c1.len() / (n * d);
                            let cond = &input.cond[imgs.start * n * cin..imgs.end * n * cin];
                            let (c, p) = e.forward(cond, &input.ks[imgs], input.h, input.w)?;
                            c1.copy_from_slice(&c);
                            p1.copy_from_slice(&p);
                        }
                        Ok(())
                    })
                })
                .collect();
            for j in jobs {
                j.join()
                    .map_err(|_| Error::Other("an embedder thread panicked".into()))??;
            }
            Ok(())
        })?;
        Ok((ctx, proj))
    }

    /// The prepared slice of stage `si` from a context and projection made elsewhere (libtorch's embedder,
    /// for `spn bench`).
    pub(crate) fn prepared(
        &self,
        si: usize,
        ctx: Vec<f32>,
        proj: Vec<f32>,
        input: &SliceBatch,
    ) -> Result<CpuPrepared<'_>> {
        let step = &self.stage(si)?.step;
        let n = input.h * input.w;
        let copy = self.copy_map(si, input)?;
        if !ctx.len().is_multiple_of(n * step.channels())
            || !proj.len().is_multiple_of(n * step.proj_width())
        {
            return Err(Error::Other("slice context of the wrong size".into()));
        }
        Ok(CpuPrepared {
            step,
            ctx,
            proj,
            n,
            copy,
        })
    }

    /// The head's copy map of a slice batch (`neighbours::copy_map`), empty for a stage without the copy path.
    fn copy_map(&self, si: usize, input: &SliceBatch) -> Result<Vec<i32>> {
        Ok(neighbours::batch_map(&self.stage(si)?.spec, input)?.unwrap_or_default())
    }
}

/// Images the embedder takes per call (measured with `spn bench`: more than a few let their patches spill out of
/// the cache).
const EMBED_IMAGES_PER_CALL: usize = 1;

/// Threads the CPU engine decodes on, and the sampler draws noise on: the machine's, or `SPN_THREADS`.
pub(crate) fn threads() -> usize {
    std::env::var("SPN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn groups(&self, b: usize) -> usize {
        self.threads.min(b).max(1)
    }

    fn prepare<'e>(&'e self, si: usize, input: &SliceBatch) -> Result<Box<dyn PreparedSlice + 'e>> {
        let (ctx, proj) = self.context(si, input)?;
        Ok(Box::new(self.prepared(si, ctx, proj, input)?))
    }

    fn score(&self, si: usize, input: &SliceBatch) -> Result<Vec<f32>> {
        let st = self.stage(si)?;
        let (ctx, proj) = self.context(si, input)?;
        let n = input.h * input.w;
        if input.values.len() != input.b * n {
            return Err(Error::Other("slice values of the wrong size".into()));
        }
        let mut copy = self.copy_map(si, input)?;
        if !copy.is_empty() {
            let entries = neighbours::entries(&st.spec.net);
            neighbours::fill_all(&mut copy, input.values, (input.h, input.w), entries);
        }
        let per_copy = copy.len() / input.b.max(1);
        let (d, pw) = (st.step.channels(), st.step.proj_width());
        let mut out = vec![0f32; input.b * n * 3];
        let per = input.b.div_ceil(self.groups(input.b));
        std::thread::scope(|sc| {
            for (g, o) in out.chunks_mut(per * n * 3).enumerate() {
                let (ctx, proj, copy) = (&ctx, &proj, &copy);
                sc.spawn(move || {
                    for (j, lp) in o.chunks_mut(n * 3).enumerate() {
                        let i = g * per + j;
                        lp.copy_from_slice(&st.full.log_probs(
                            &st.step,
                            &ctx[i * n * d..(i + 1) * n * d],
                            &proj[i * n * pw..(i + 1) * n * pw],
                            &input.values[i * n..(i + 1) * n],
                            &copy[i * per_copy..(i + 1) * per_copy],
                        ));
                    }
                });
            }
        });
        Ok(out)
    }
}

/// A slice of a batch prepared by the CPU engine: host data only, so its groups decode on any thread.
pub(crate) struct CpuPrepared<'e> {
    step: &'e CpuStepWeights,
    ctx: Vec<f32>,
    proj: Vec<f32>,
    n: usize,
    /// The copy map `(B, n, E, 3)`, empty without the copy path.
    copy: Vec<i32>,
}

impl CpuPrepared<'_> {
    fn cpu_decoder(&self, range: std::ops::Range<usize>) -> Result<CpuSliceDecoder<'_>> {
        let (n, d, pw) = (self.n, self.step.channels(), self.step.proj_width());
        let copy = match self.copy.is_empty() {
            true => &[],
            false => {
                let entries = self.step.head.copy.as_ref().map_or(0, |c| c.width / 3);
                neighbours::group_rows(&self.copy, range.clone(), n, entries)?
            }
        };
        let (ctx, proj) = (
            self.ctx.get(range.start * n * d..range.end * n * d),
            self.proj.get(range.start * n * pw..range.end * n * pw),
        );
        match (ctx, proj) {
            (Some(c), Some(p)) => {
                CpuSliceDecoder::new(self.step, range.len(), c, p).with_copy(copy)
            }
            _ => Err(Error::Other(format!(
                "images {range:?} are not in the batch"
            ))),
        }
    }
}

impl PreparedSlice for CpuPrepared<'_> {
    fn decoder(&self, range: std::ops::Range<usize>) -> Result<Box<dyn SliceDecoding + '_>> {
        Ok(Box::new(self.cpu_decoder(range)?))
    }

    fn decoder_send(
        &self,
        range: std::ops::Range<usize>,
    ) -> Result<Box<dyn SliceDecoding + Send + '_>> {
        Ok(Box::new(self.cpu_decoder(range)?))
    }
}

/// The embedder's input for target slices `ks` (`SpnNet::condition`), channel-last `(B, h * w, cin)`: the
/// stage's own slices before each image's target (later ones zero), scaled to [-1, 1], then for stage C every
/// slice of the MSB image. `own` and `cond` are slice stacks `(B, 3, S*S, h, w)` of integer levels.
pub fn condition(
    spec: &StageSpec,
    own: &[i64],
    cond: Option<&[i64]>,
    ks: &[usize],
    (h, w): (usize, usize),
) -> Result<Vec<f32>> {
    let (b, slices, n) = (ks.len(), spec.slices() as usize, h * w);
    let per = 3 * slices * n;
    let cond_levels = match (cond, spec.cond_bits) {
        (Some(c), Some(bits)) if c.len() == b * per => Some(1i64 << bits),
        (None, None) => None,
        _ => {
            return Err(Error::Other(
                "stage conditioning does not match its spec".into(),
            ))
        }
    };
    if own.len() != b * per {
        return Err(Error::Other("slice stack of the wrong size".into()));
    }
    let cin = 3 * slices * if cond_levels.is_some() { 2 } else { 1 };
    let scale = |levels: i64| (2.0 / (levels - 1).max(1) as f64) as f32;
    let (so, sc) = (scale(spec.levels()), scale(cond_levels.unwrap_or(2)));
    let mut out = vec![0f32; b * n * cin];
    for (i, &k) in ks.iter().enumerate() {
        for ch in 0..3 * slices {
            let src = &own[i * per + ch * n..][..n];
            if ch % slices < k {
                for (p, v) in src.iter().enumerate() {
                    out[(i * n + p) * cin + ch] = *v as f32 * so - 1.0;
                }
            }
            if let Some(c) = cond {
                let src = &c[i * per + ch * n..][..n];
                for (p, v) in src.iter().enumerate() {
                    out[(i * n + p) * cin + 3 * slices + ch] = *v as f32 * sc - 1.0;
                }
            }
        }
    }
    Ok(out)
}

/// A model for sampling on the CPU without libtorch: a bundle's config, training record and the CPU engine
/// built from its weights.
pub struct HostModel {
    pub config: PipelineConfig,
    pub info: TrainingInfo,
    engine: CpuEngine,
}

impl HostModel {
    /// Reads a bundle (`bundle::read`: any damage is an error) and builds the CPU engine from it.
    pub fn load(path: &Path) -> Result<Self> {
        let contents = bundle::read(path)?;
        if contents.meta.contains_key("train_state") {
            return Err(bundle::checkpoint_not_model(path));
        }
        let (config, info) = bundle::parse_meta(path, &contents.meta)?;
        let weights = contents.tensors;
        bundle::check_weight_count(path, &config, &weights, "")?;
        let engine = CpuEngine::new(&config, &weights).map_err(|e| Error::Bundle {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            config,
            info,
            engine,
        })
    }

    pub fn engine(&self) -> &CpuEngine {
        &self.engine
    }
}

impl Network for HostModel {
    fn config(&self) -> &PipelineConfig {
        &self.config
    }

    fn engine(&self, decoding: Decoding, host_embedder: bool) -> Result<Box<dyn Engine + '_>> {
        if decoding != Decoding::Incremental || !host_embedder {
            return Err(Error::input(
                "this build samples with the plain-Rust CPU engine only: the tensor and naive engines need libtorch",
            ));
        }
        Ok(Box::new(&self.engine))
    }
}
