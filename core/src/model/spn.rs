//! One stage's network: slice embedder + masked decoder + channel head. The same type serves stages A, B, C
//! and the single-stage 8-bit SPN; what differs is the [`StageSpec`].
use super::decoder::MaskedDecoder;
use super::embedder::SliceEmbedder;
use super::head::ChannelHead;
use super::values::Values;
use crate::config::StageSpec;
use crate::decode::neighbours;
use crate::error::{Error, Result};
use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct SpnNet {
    pub spec: StageSpec,
    pub embedder: SliceEmbedder,
    pub decoder: MaskedDecoder,
    pub head: ChannelHead,
}

impl SpnNet {
    /// Allocates the stage's weights; any libtorch failure (out of memory) is an error, never a panic.
    pub fn new(vs: nn::Path, spec: &StageSpec) -> Result<Self> {
        Ok(Self {
            spec: spec.clone(),
            embedder: SliceEmbedder::new(&vs / "embedder", spec)?,
            decoder: MaskedDecoder::new(&vs / "decoder", spec)?,
            head: ChannelHead::new(
                &vs / "head",
                spec.net.channels,
                spec.levels(),
                (
                    neighbours::entries(&spec.net),
                    neighbours::blends(&spec.net),
                    neighbours::slopes(&spec.net),
                    neighbours::blend_slopes(&spec.net),
                ),
            )?,
        })
    }

    /// The embedder input for target slices `k`: the stage's own slices before k (later ones zeroed), plus
    /// every slice of the MSB image for stage C. `own`, `cond`: slice stacks `(B, 3, [L], S*S, h, w)`.
    pub fn condition(&self, own: &Values, cond: Option<&Values>, k: &Tensor) -> Result<Tensor> {
        let n = self.spec.slices();
        let x = own.normalized(self.spec.levels())?; // (B, 3, S*S, h, w)
        let (b, _, _, h, w) = x.size5()?;
        let present = Tensor::f_arange(n, (Kind::Int64, x.device()))?
            .f_view([1, n])?
            .f_lt_tensor(&k.f_view([b, 1])?)?
            .f_to_kind(Kind::Float)?
            .f_view([b, 1, n, 1, 1])?;
        let mut parts = vec![x.f_mul(&present)?.f_reshape([b, 3 * n, h, w])?];
        match (cond, self.spec.cond_bits) {
            (Some(m), Some(bits)) => {
                parts.push(m.normalized(1 << bits)?.f_reshape([b, 3 * n, h, w])?)
            }
            (None, None) => {}
            _ => {
                return Err(Error::Other(
                    "stage conditioning does not match its spec".into(),
                ))
            }
        }
        Ok(Tensor::f_cat(&parts, 1)?)
    }

    /// Slice context `(B, D, h, w)` for target slices `k`.
    pub fn context(&self, own: &Values, cond: Option<&Values>, k: &Tensor) -> Result<Tensor> {
        self.embedder
            .forward_t(&self.condition(own, cond, k)?, k, false)
    }

    /// Teacher-forced logits `(B, 3, L, h, w)` of target slices `k` (one per example).
    pub fn logits(&self, own: &Values, cond: Option<&Values>, k: &Tensor) -> Result<Tensor> {
        self.logits_t(own, cond, k, false)
    }

    /// [`Self::logits`]; `train` applies the config's dropout (training only: the result is then not the
    /// model's density).
    pub fn logits_t(
        &self,
        own: &Values,
        cond: Option<&Values>,
        k: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let cond = self.condition(own, cond, k)?;
        let ctx = self.embedder.forward_t(&cond, k, train)?;
        let target = own.gather_slice(k)?;
        let trunk = self
            .decoder
            .forward_t(&target.normalized(self.spec.levels())?, &ctx, train)?;
        let copy = self.copy_map(&cond, k, &target)?;
        self.head.forward(&trunk, &target, copy.as_ref())
    }

    /// The head's copy map `(B, h, w, E, 3)` (int64, E = `neighbours::entries`) read off the embedder input `cond`
    /// `(B, cin, h, w)` by the one rule every engine uses (`decode::neighbours`), the in-slice neighbours
    /// taken from the target slice (teacher forcing), or None without the copy path. Computed on the host:
    /// an integer map, no gradient flows through it.
    pub fn copy_map(&self, cond: &Tensor, k: &Tensor, target: &Values) -> Result<Option<Tensor>> {
        if !self.spec.net.copy {
            return Ok(None);
        }
        let (_, cin, h, w) = cond.size4()?;
        let host = crate::decode::torch::to_host(&cond.f_detach()?.f_permute([0, 2, 3, 1])?)?;
        let ks = Vec::<i64>::try_from(&k.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Int64)?)?;
        let ks: Vec<usize> = ks.iter().map(|&k| k.max(0) as usize).collect();
        let levels = match target {
            Values::Hard(t) => t.shallow_clone(),
            Values::Soft(t) => t.f_argmax(2, false)?,
        };
        // (B, 3, h, w) -> (B, h * w) pixels of three levels.
        let levels = Vec::<i64>::try_from(
            &levels
                .f_permute([0, 2, 3, 1])?
                .f_to_device(tch::Device::Cpu)?
                .f_contiguous()?
                .f_flatten(0, -1)?,
        )?;
        let levels: Vec<[i64; 3]> = levels.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        self.copy_map_host(
            &host,
            cin as usize,
            &ks,
            (h as usize, w as usize),
            Some(&levels),
            cond.device(),
        )
    }

    /// [`Self::copy_map`] of a channel-last embedder input `(B, h * w, cin)` on the host (as the engines
    /// receive it), onto `device`; `levels` `(B, h * w)`: the target slices, to fill in the in-slice
    /// neighbours (None: leave them `PENDING`).
    pub fn copy_map_host(
        &self,
        cond: &[f32],
        cin: usize,
        ks: &[usize],
        (h, w): (usize, usize),
        levels: Option<&[[i64; 3]]>,
        device: tch::Device,
    ) -> Result<Option<Tensor>> {
        if !self.spec.net.copy {
            return Ok(None);
        }
        let mut map = neighbours::copy_map(&self.spec, cond, cin, ks, (h, w))?;
        if let Some(l) = levels {
            neighbours::fill_all(&mut map, l, (h, w), neighbours::entries(&self.spec.net));
        }
        let entries = neighbours::entries(&self.spec.net);
        Ok(Some(map_tensor(&map, (ks.len(), h, w, entries), device)?))
    }
}

/// A copy map (or rows of one) as an int64 tensor `(B, h, w, E, 3)` on `device`.
pub fn map_tensor(
    map: &[i32],
    (b, h, w, e): (usize, usize, usize, usize),
    device: tch::Device,
) -> Result<Tensor> {
    let map: Vec<i64> = map.iter().map(|&v| i64::from(v)).collect();
    let dims = [b, h, w, e, 3].map(|d| d as i64);
    Ok(Tensor::f_from_slice(&map)?
        .f_view(dims)?
        .f_to_device(device)?)
}

/// Negative log-likelihood in nats of every sub-pixel: logits `(B, 3, L, h, w)`, targets `(B, 3, h, w)`.
pub fn nll(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let lp = logits.f_log_softmax(2, Kind::Float)?;
    Ok(lp
        .f_gather(2, &target.f_unsqueeze(2)?, false)?
        .f_squeeze_dim(2)?
        .f_neg()?)
}

#[cfg(test)]
mod tests {
    use crate::{Pipeline, PipelineConfig};
    use tch::{Device, Kind, Tensor};

    #[test]
    fn dropout_acts_only_while_training() {
        tch::manual_seed(1);
        let mut c = PipelineConfig::preset("tiny").unwrap();
        c.net.dropout = 0.5;
        let p = Pipeline::new(c, Device::Cpu).unwrap();
        let x = Tensor::randint(256, [2, 3, 8, 8], (Kind::Int64, Device::Cpu));
        let inputs = p.stage_inputs(&p.decompose(&x).unwrap()).unwrap();
        for (net, (own, cond)) in p.stages.iter().zip(&inputs) {
            let last = net.spec.slices() - 1;
            let k = Tensor::from_slice(&[last, last]);
            let logits = |train| net.logits_t(own, cond.as_ref(), &k, train).unwrap();
            let eval = net.logits(own, cond.as_ref(), &k).unwrap();
            assert!(eval.equal(&logits(false)), "evaluation is deterministic");
            let (a, b) = (logits(true), logits(true));
            assert!(
                !a.equal(&b),
                "stage {}: training draws new masks",
                net.spec.kind.name()
            );
            assert!(!a.equal(&eval));
        }
    }
}
