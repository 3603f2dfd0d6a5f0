//! Decoding engines behind one interface, apart from the network definitions (`crate::model`).
//!
//! An engine decodes one slice for a group of images, position by position in raster order (docs/design.md
//! section 4): [`SliceDecoding::features`] runs the trunk at a position once every earlier pixel is
//! committed, [`SliceDecoding::channel_logits`] gives the logits of one channel given the channels already
//! chosen for that pixel, and [`SliceDecoding::commit`] records the pixel. What value is chosen is not the
//! engine's business: the sampler's one draw rule (`crate::sampler::draw`) decides, for every engine.
//!
//! - [`naive`]: a full decoder pass per position, the reference;
//! - [`tensor`]: per-layer caches as tensor ops on the model's device (the path on GPUs);
//! - [`cpu`]: the same caches as plain loops and small matrix products on the host, one group of images per
//!   thread (the path on CPUs).
//!
//! All three give the same logits (tests hold them within 1e-4 of the full pass).
pub mod cpu;
pub mod embed;
pub mod naive;
pub mod tensor;

use crate::error::Result;
use crate::model::SpnNet;
use crate::pipeline::Pipeline;
use tch::{Kind, Tensor};

/// One slice being decoded for a group of images. Values are integer levels, one `[R, G, B]` per image of
/// the group; logits are `group x levels`, row-major.
pub trait SliceDecoding {
    /// Runs the trunk at raster position `pos`; every pixel before it must be committed.
    fn features(&mut self, pos: usize) -> Result<()>;
    /// Logits of channel `ch` at the current position given the channels before it (`chosen[i][..ch]`).
    fn channel_logits(&mut self, ch: usize, chosen: &[[i64; 3]]) -> Result<&[f32]>;
    /// Records the pixel at `pos` so that later positions see it.
    fn commit(&mut self, pos: usize, values: &[[i64; 3]]) -> Result<()>;
}

/// Which engine decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoding {
    /// Per-layer caches: each step computes only the new position. On the CPU this is the tensor-free
    /// engine of [`cpu`], elsewhere [`Decoding::IncrementalTensor`].
    Incremental,
    /// The same caches as tensor ops on the model's device: the path on GPUs; on the CPU kept as a second
    /// implementation the fast one is tested against.
    IncrementalTensor,
    /// A full decoder pass per pixel: the reference the incremental engines are tested against.
    Naive,
}

/// An engine with its per-stage weights, chosen once for a pipeline and a device. The CPU engine embeds slices
/// on the host too (`embed`), unless asked to use libtorch's embedder (to compare them: `spn bench`).
pub enum Engine {
    Cpu(Vec<cpu::CpuStepWeights>, Option<Vec<embed::HostEmbedder>>),
    Tensor(Vec<tensor::StepWeights>),
    Naive,
}

/// What an engine starts one slice from, prepared once for the whole batch.
pub enum SliceInput {
    /// Context `(B, n, D)` and its per-block projections `(B, n, 2D * blocks)`, channel-last on the host.
    Host {
        ctx: Vec<f32>,
        proj: Vec<f32>,
        n: usize,
    },
    /// The embedder's context `(B, D, h, w)` and the slice's current values `(B, 3, h, w)`.
    Device { ctx: Tensor, values: Tensor },
}

impl Engine {
    /// `host_embedder`: on the CPU engine, embed slices on the host (else with libtorch).
    pub fn new(pipeline: &Pipeline, decoding: Decoding, host_embedder: bool) -> Result<Self> {
        let stages = &pipeline.stages;
        Ok(match (decoding, pipeline.device()) {
            (Decoding::Naive, _) => Engine::Naive,
            (Decoding::Incremental, tch::Device::Cpu) => Engine::Cpu(
                stages
                    .iter()
                    .map(cpu::CpuStepWeights::new)
                    .collect::<Result<_>>()?,
                match host_embedder {
                    true => Some(
                        stages
                            .iter()
                            .map(embed::HostEmbedder::new)
                            .collect::<Result<_>>()?,
                    ),
                    false => None,
                },
            ),
            _ => Engine::Tensor(tch::no_grad(|| {
                stages
                    .iter()
                    .map(tensor::StepWeights::new)
                    .collect::<Result<_>>()
            })?),
        })
    }

    /// `cpu`, `tensor` or `naive`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_, Some(_)) => "cpu",
            Engine::Cpu(_, None) => "cpu (libtorch embedder)",
            Engine::Tensor(_) => "tensor",
            Engine::Naive => "naive",
        }
    }

    /// Groups a batch of `b` images is split into, each decoded on its own thread. Tensor engines run
    /// the whole batch as one group and leave threading to libtorch.
    pub fn groups(&self, b: usize) -> usize {
        match self {
            Engine::Cpu(..) => (tch::get_num_threads().max(1) as usize).min(b).max(1),
            _ => 1,
        }
    }

    /// Prepares slice `k` (per image) of stage `si`: `embed_in` is the embedder's input `(B, cin, h, w)`
    /// (`SpnNet::condition`), `values` the slice's current values `(B, 3, h, w)` (known ones in place).
    pub fn prepare(
        &self,
        net: &SpnNet,
        si: usize,
        (embed_in, k): (&Tensor, &Tensor),
        values: &Tensor,
    ) -> Result<SliceInput> {
        Ok(match self {
            Engine::Cpu(_, Some(embedders)) => host_context(
                &embedders[si],
                embed_in,
                k,
                self.groups(k.size()[0] as usize),
            )?,
            Engine::Cpu(_, None) => {
                let ctx = net.embedder.forward_t(embed_in, k, false)?;
                let (_, _, h, w) = ctx.size4()?;
                let proj = crate::model::layers::conv2d_same(&ctx, &net.decoder.context)?;
                SliceInput::Host {
                    ctx: channel_last(&ctx)?,
                    proj: channel_last(&proj)?,
                    n: (h * w) as usize,
                }
            }
            _ => SliceInput::Device {
                ctx: net.embedder.forward_t(embed_in, k, false)?,
                values: values.f_to_kind(Kind::Int64)?,
            },
        })
    }

    /// The CPU engine for images `range` of a prepared slice of stage `si`. It holds only host data, so
    /// it may decode on another thread.
    pub fn cpu_slice<'a>(
        &'a self,
        si: usize,
        input: &'a SliceInput,
        range: std::ops::Range<usize>,
    ) -> Result<cpu::CpuSliceDecoder<'a>> {
        match (self, input) {
            (Engine::Cpu(w, _), SliceInput::Host { ctx, proj, n }) => {
                let w = &w[si];
                let (d, pw) = (w.channels(), w.proj_width());
                Ok(cpu::CpuSliceDecoder::new(
                    w,
                    range.len(),
                    &ctx[range.start * n * d..range.end * n * d],
                    &proj[range.start * n * pw..range.end * n * pw],
                ))
            }
            _ => Err(crate::Error::Other(
                "only the CPU engine decodes groups on other threads".into(),
            )),
        }
    }

    /// An engine for images `range` of a prepared slice of stage `si`.
    pub fn slice<'a>(
        &'a self,
        net: &'a SpnNet,
        si: usize,
        input: &'a SliceInput,
        range: std::ops::Range<usize>,
    ) -> Result<Box<dyn SliceDecoding + 'a>> {
        let (a, g) = (range.start as i64, range.len() as i64);
        Ok(match (self, input) {
            (Engine::Cpu(..), _) => Box::new(self.cpu_slice(si, input, range)?),
            (Engine::Tensor(w), SliceInput::Device { ctx, .. }) => Box::new(
                tensor::TensorSlice::new(net, &w[si], &ctx.f_narrow(0, a, g)?)?,
            ),
            (Engine::Naive, SliceInput::Device { ctx, values }) => Box::new(
                naive::NaiveSlice::new(net, ctx.f_narrow(0, a, g)?, values.f_narrow(0, a, g)?)?,
            ),
            _ => {
                return Err(crate::Error::Other(
                    "slice input prepared for another engine".into(),
                ))
            }
        })
    }
}

/// The host embedder's context and projection for a batch, its images split over `groups` threads.
fn host_context(
    e: &embed::HostEmbedder,
    embed_in: &Tensor,
    k: &Tensor,
    groups: usize,
) -> Result<SliceInput> {
    let (b, cin, h, w) = embed_in.size4()?;
    let (b, n, cin) = (b as usize, (h * w) as usize, cin as usize);
    if cin != e.cin() {
        return Err(crate::Error::Other(format!(
            "embedder input has {cin} channels, not {}",
            e.cin()
        )));
    }
    let cond = channel_last(embed_in)?;
    let ks = Vec::<i64>::try_from(k.f_to_device(tch::Device::Cpu)?)?;
    let (d, pw) = (e.d(), e.proj_width());
    let (mut ctx, mut proj) = (vec![0.0f32; b * n * d], vec![0.0f32; b * n * pw]);
    let per = b.div_ceil(groups.max(1));
    std::thread::scope(|sc| -> Result<()> {
        let jobs: Vec<_> = ctx
            .chunks_mut(per * n * d)
            .zip(proj.chunks_mut(per * n * pw))
            .enumerate()
            .map(|(g, (cx, pj))| {
                let (cond, ks) = (&cond, &ks);
                sc.spawn(move || -> Result<()> {
                    for (j, (c1, p1)) in cx.chunks_mut(n * d).zip(pj.chunks_mut(n * pw)).enumerate()
                    {
                        let i = g * per + j;
                        let (c, p) = e.forward(
                            &cond[i * n * cin..(i + 1) * n * cin],
                            ks[i] as usize,
                            h as usize,
                            w as usize,
                        )?;
                        c1.copy_from_slice(&c);
                        p1.copy_from_slice(&p);
                    }
                    Ok(())
                })
            })
            .collect();
        for j in jobs {
            j.join()
                .map_err(|_| crate::Error::Other("an embedder thread panicked".into()))??;
        }
        Ok(())
    })?;
    Ok(SliceInput::Host { ctx, proj, n })
}

/// `(B, C, h, w)` -> `(B, h * w, C)` as a flat host vector.
fn channel_last(t: &Tensor) -> Result<Vec<f32>> {
    cpu::to_vec(&t.f_flatten(2, 3)?.f_transpose(1, 2)?)
}

/// Logits of channel `ch` from trunk features `(B, 1, 1, D)` through the model's own head, into a host
/// vector: the tensor engines' shared step.
fn head_logits<'l>(
    net: &SpnNet,
    feats: Option<&Tensor>,
    ch: usize,
    chosen: &[[i64; 3]],
    out: &'l mut Vec<f32>,
) -> Result<&'l [f32]> {
    let feats = feats.ok_or_else(|| crate::Error::Other("logits asked before features".into()))?;
    let b = chosen.len() as i64;
    let dev = feats.device();
    let earlier = (0..ch)
        .map(|c| {
            let v: Vec<i64> = chosen.iter().map(|px| px[c]).collect();
            Ok(crate::model::Values::Hard(
                Tensor::f_from_slice(&v)?
                    .f_to_device(dev)?
                    .f_view([b, 1, 1])?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let logits = net
        .head
        .channel_logits(feats, ch, &earlier)?
        .f_view([b, net.spec.levels()])?;
    *out = cpu::to_vec(&logits)?;
    Ok(out)
}

/// Pixel values of a group as a `(B, 3)` int64 tensor on `dev`.
fn pixels(values: &[[i64; 3]], dev: tch::Device) -> Result<Tensor> {
    let flat: Vec<i64> = values.iter().flatten().copied().collect();
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([values.len() as i64, 3])?
        .f_to_device(dev)?)
}
