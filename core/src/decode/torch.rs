//! The engines on libtorch: the tensor engine (the path on GPUs), the naive reference, and the CPU engine fed
//! by libtorch's slice embedder (to compare the two embedders in `spn bench`). Each takes the sampler's host
//! arrays (`SliceBatch`) and moves them to the model's device.
use super::host::CpuEngine;
use super::naive::NaiveSlice;
use super::neighbours::{self, CopyRows};
use super::tensor::{StepWeights, TensorSlice};
use super::{Decoding, Engine, Network, PreparedSlice, SliceBatch, SliceDecoding};
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::model::{SpnNet, Values};
use crate::pipeline::Pipeline;
use tch::{Kind, Tensor};

impl Network for Pipeline {
    fn config(&self) -> &PipelineConfig {
        &self.config
    }

    fn engine(&self, decoding: Decoding, host_embedder: bool) -> Result<Box<dyn Engine + '_>> {
        Ok(match (decoding, self.device()) {
            (Decoding::Naive, _) => Box::new(TorchEngine {
                pipeline: self,
                steps: None,
            }),
            (Decoding::Incremental, tch::Device::Cpu) => {
                let cpu = CpuEngine::new(&self.config, &self.host_weights()?)?;
                match host_embedder {
                    true => Box::new(cpu),
                    false => Box::new(LibtorchEmbedded {
                        pipeline: self,
                        cpu,
                    }),
                }
            }
            _ => Box::new(TorchEngine {
                pipeline: self,
                steps: Some(tch::no_grad(|| {
                    self.stages
                        .iter()
                        .map(StepWeights::new)
                        .collect::<Result<_>>()
                })?),
            }),
        })
    }
}

/// The embedder's input `(B, cin, h, w)` and target slices `(B,)` of a slice batch, on `dev`.
fn embed_input(input: &SliceBatch, dev: tch::Device) -> Result<(Tensor, Tensor)> {
    let (b, h, w, cin) = (
        input.b as i64,
        input.h as i64,
        input.w as i64,
        input.cin as i64,
    );
    let cond = Tensor::f_from_slice(input.cond)?
        .f_view([b, h * w, cin])?
        .f_transpose(1, 2)?
        .f_reshape([b, cin, h, w])?
        .f_to_device(dev)?;
    let ks: Vec<i64> = input.ks.iter().map(|&k| k as i64).collect();
    Ok((cond, Tensor::f_from_slice(&ks)?.f_to_device(dev)?))
}

/// The slice's values `(B, 3, h, w)` int64 on `dev`.
fn values_tensor(input: &SliceBatch, dev: tch::Device) -> Result<Tensor> {
    let flat: Vec<i64> = input.values.iter().flatten().copied().collect();
    let (b, h, w) = (input.b as i64, input.h as i64, input.w as i64);
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([b, h, w, 3])?
        .f_permute([0, 3, 1, 2])?
        .f_contiguous()?
        .f_to_device(dev)?)
}

/// The tensor engine (`steps`: its per-stage weights) or, without steps, the naive one.
struct TorchEngine<'p> {
    pipeline: &'p Pipeline,
    steps: Option<Vec<StepWeights>>,
}

impl TorchEngine<'_> {
    fn net(&self, si: usize) -> Result<&SpnNet> {
        self.pipeline
            .stages
            .get(si)
            .ok_or_else(|| Error::Other(format!("no stage {si}")))
    }
}

impl Engine for TorchEngine<'_> {
    fn name(&self) -> &'static str {
        match self.steps {
            Some(_) => "tensor",
            None => "naive",
        }
    }

    fn prepare<'e>(&'e self, si: usize, input: &SliceBatch) -> Result<Box<dyn PreparedSlice + 'e>> {
        let net = self.net(si)?;
        let dev = self.pipeline.device();
        tch::no_grad(|| {
            let (cond, ks) = embed_input(input, dev)?;
            Ok(Box::new(TorchPrepared {
                net,
                steps: self.steps.as_ref().map(|s| &s[si]),
                ctx: net.embedder.forward_t(&cond, &ks, false)?,
                values: values_tensor(input, dev)?,
                copy: neighbours::batch_map(&net.spec, input)?,
            }) as Box<dyn PreparedSlice>)
        })
    }

    fn score(&self, si: usize, input: &SliceBatch) -> Result<Vec<f32>> {
        full_pass_log_probs(self.net(si)?, input, self.pipeline.device())
    }
}

/// The log-probability of every sub-pixel `(B, h * w, 3)` of a known slice by libtorch's full pass
/// (`SpnNet::logits`).
fn full_pass_log_probs(net: &SpnNet, input: &SliceBatch, dev: tch::Device) -> Result<Vec<f32>> {
    tch::no_grad(|| {
        let (cond, ks) = embed_input(input, dev)?;
        let ctx = net.embedder.forward_t(&cond, &ks, false)?;
        let target = values_tensor(input, dev)?;
        let v = Values::Hard(target.shallow_clone());
        let trunk = net
            .decoder
            .forward(&v.normalized(net.spec.levels())?, &ctx)?;
        let copy = net.copy_map_host(
            input.cond,
            input.cin,
            input.ks,
            (input.h, input.w),
            Some(input.values),
            dev,
        )?;
        let logits = net.head.forward(&trunk, &v, copy.as_ref())?;
        // (B, 3, h, w) -> (B, h * w, 3)
        let lp = crate::model::nll(&logits, &target)?
            .f_neg()?
            .f_permute([0, 2, 3, 1])?;
        to_host(&lp)
    })
}

/// A slice prepared on the model's device: its context and values.
struct TorchPrepared<'e> {
    net: &'e SpnNet,
    steps: Option<&'e StepWeights>,
    ctx: Tensor,
    values: Tensor,
    /// The copy map `(B, h * w, E, 3)`, None without the copy path.
    copy: Option<Vec<i32>>,
}

impl PreparedSlice for TorchPrepared<'_> {
    fn decoder(&self, range: std::ops::Range<usize>) -> Result<Box<dyn SliceDecoding + '_>> {
        let (a, g) = (range.start as i64, range.len() as i64);
        let ctx = self.ctx.f_narrow(0, a, g)?;
        let copy = self
            .copy
            .as_ref()
            .map(|c| {
                let (_, _, h, w) = self.ctx.size4()?;
                let (h, w) = (h as usize, w as usize);
                let entries = neighbours::entries(&self.net.spec.net);
                let rows = neighbours::group_rows(c, range.clone(), h * w, entries)?;
                CopyRows::new(rows.to_vec(), (h, w), entries)
            })
            .transpose()?;
        Ok(match self.steps {
            Some(w) => Box::new(TensorSlice::new(self.net, w, &ctx, copy)?),
            None => Box::new(NaiveSlice::new(
                self.net,
                ctx,
                self.values.f_narrow(0, a, g)?,
                copy,
            )?),
        })
    }
}

/// The CPU engine's step decoder with libtorch's slice embedder and full pass in place of its own: the CPU path
/// before the engine was all plain Rust, which `spn bench` measures beside it.
struct LibtorchEmbedded<'p> {
    pipeline: &'p Pipeline,
    cpu: CpuEngine,
}

impl Engine for LibtorchEmbedded<'_> {
    fn name(&self) -> &'static str {
        "cpu (libtorch embedder and full pass)"
    }

    fn groups(&self, b: usize) -> usize {
        self.cpu.groups(b)
    }

    fn prepare<'e>(&'e self, si: usize, input: &SliceBatch) -> Result<Box<dyn PreparedSlice + 'e>> {
        let net = self
            .pipeline
            .stages
            .get(si)
            .ok_or_else(|| Error::Other(format!("no stage {si}")))?;
        let (ctx, proj) = tch::no_grad(|| -> Result<_> {
            let (cond, ks) = embed_input(input, tch::Device::Cpu)?;
            let ctx = net.embedder.forward_t(&cond, &ks, false)?;
            let proj = crate::model::layers::conv2d_same(&ctx, &net.decoder.context)?;
            Ok((channel_last(&ctx)?, channel_last(&proj)?))
        })?;
        Ok(Box::new(self.cpu.prepared(si, ctx, proj, input)?))
    }

    fn score(&self, si: usize, input: &SliceBatch) -> Result<Vec<f32>> {
        let net = self
            .pipeline
            .stages
            .get(si)
            .ok_or_else(|| Error::Other(format!("no stage {si}")))?;
        full_pass_log_probs(net, input, tch::Device::Cpu)
    }
}

/// A tensor as a flat `f32` vector on the host, in row-major order.
pub(crate) fn to_host(t: &Tensor) -> Result<Vec<f32>> {
    let t = t
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(&t)?)
}

/// `(B, C, h, w)` -> `(B, h * w, C)` as a flat host vector.
fn channel_last(t: &Tensor) -> Result<Vec<f32>> {
    to_host(&t.f_flatten(2, 3)?.f_transpose(1, 2)?)
}

/// Logits of channel `ch` from trunk features `(B, 1, 1, D)` through the model's own head, into a host
/// vector: the tensor engines' shared step. `copy`: the copy map's rows at this position `(B, 1, 1,
/// E, 3)`.
pub(crate) fn head_logits<'l>(
    net: &SpnNet,
    feats: Option<&Tensor>,
    ch: usize,
    chosen: &[[i64; 3]],
    copy: Option<&Tensor>,
    out: &'l mut Vec<f32>,
) -> Result<&'l [f32]> {
    let feats = feats.ok_or_else(|| Error::Other("logits asked before features".into()))?;
    let b = chosen.len() as i64;
    let dev = feats.device();
    let earlier = (0..ch)
        .map(|c| {
            let v: Vec<i64> = chosen.iter().map(|px| px[c]).collect();
            Ok(Values::Hard(
                Tensor::f_from_slice(&v)?
                    .f_to_device(dev)?
                    .f_view([b, 1, 1])?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let logits = net
        .head
        .channel_logits(feats, ch, &earlier, copy)?
        .f_view([b, net.spec.levels()])?;
    *out = to_host(&logits)?;
    Ok(out)
}

/// Pixel values of a group as a `(B, 3)` int64 tensor on `dev`.
pub(crate) fn pixels(values: &[[i64; 3]], dev: tch::Device) -> Result<Tensor> {
    let flat: Vec<i64> = values.iter().flatten().copied().collect();
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([values.len() as i64, 3])?
        .f_to_device(dev)?)
}

/// The copy rows of a decoding group at raster position `pos`, as `(G, 1, 1, E, 3)` on `dev`.
pub(crate) fn copy_at(
    copy: Option<&mut CopyRows>,
    pos: usize,
    dev: tch::Device,
) -> Result<Option<Tensor>> {
    copy.map(|c| {
        let entries = c.entries();
        let rows = c.at(pos);
        let g = rows.len() / (3 * entries).max(1);
        crate::model::spn::map_tensor(rows, (g, 1, 1, entries), dev)
    })
    .transpose()
}
