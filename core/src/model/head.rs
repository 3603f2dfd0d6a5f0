//! Output head with channel order: R from the trunk, G given R, B given R and G. The trunk runs once per
//! pixel; only this small head runs per channel.
use super::layers::{linear, new_embedding, new_linear, new_randn, Embedding};
use super::values::Values;
use crate::decode::neighbours::{IMAGE, IN_SLICE};
use crate::error::Result;
use tch::{nn, Kind, Tensor};

/// The copy path (`crate::decode::neighbours`): a gate per neighbour and channel from the trunk, and the
/// weight of the earlier channels' agreement with that neighbour.
#[derive(Debug)]
pub struct CopyGates {
    pub gate: nn::Linear,
    /// `(E * 3)`, E entries (`neighbours::entries`).
    pub agree: Tensor,
    entries: i64,
}

#[derive(Debug)]
pub struct ChannelHead {
    pub proj: nn::Linear,
    pub r_to_g: Embedding,
    pub r_to_b: Embedding,
    pub g_to_b: Embedding,
    pub out: [nn::Linear; 3],
    pub copy: Option<CopyGates>,
}

impl ChannelHead {
    /// `copy_entries`: the copy path's entries per target (`neighbours::entries`), 0 without it.
    pub fn new(vs: nn::Path, dim: i64, levels: i64, copy_entries: usize) -> Result<Self> {
        let emb = |n: &str| new_embedding(&(&vs / n), levels, dim);
        let lin = |n: &str| new_linear(&(&vs / n), dim, levels);
        Ok(Self {
            proj: new_linear(&(&vs / "proj"), dim, dim)?,
            r_to_g: emb("r_to_g")?,
            r_to_b: emb("r_to_b")?,
            g_to_b: emb("g_to_b")?,
            out: [lin("out_r")?, lin("out_g")?, lin("out_b")?],
            copy: (copy_entries > 0)
                .then(|| -> Result<CopyGates> {
                    let gates = 3 * copy_entries as i64;
                    let gate = new_linear(&(&vs / "copy_gate"), dim, gates)?;
                    close_palette(&gate)?;
                    Ok(CopyGates {
                        gate,
                        agree: new_randn(&vs, "copy_agree", &[gates], 0.01)?,
                        entries: copy_entries as i64,
                    })
                })
                .transpose()?,
        })
    }

    /// Channel-last trunk features `(B, h, w, D)` after the shared projection.
    pub fn trunk(&self, trunk: &Tensor) -> Result<Tensor> {
        linear(&trunk.f_permute([0, 2, 3, 1])?.f_relu()?, &self.proj)
    }

    /// Logits of channel `c` at every position, `(B, h, w, L)`, given the features, the earlier channels'
    /// values (`earlier[i]` is channel i, `(B, h, w)` or one-hot `(B, L, h, w)`) and, with the copy path,
    /// the copy map `(B, h, w, E, 3)` (int64, `neighbours::NONE` where nothing is copied).
    pub fn channel_logits(
        &self,
        t: &Tensor,
        c: usize,
        earlier: &[Values],
        copy: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = match c {
            0 => t.shallow_clone(),
            1 => t.f_add(&earlier[0].embed(&self.r_to_g)?)?,
            _ => t
                .f_add(&earlier[0].embed(&self.r_to_b)?)?
                .f_add(&earlier[1].embed(&self.g_to_b)?)?,
        };
        let logits = linear(&h.f_relu()?, &self.out[c])?;
        match (&self.copy, copy) {
            (Some(gates), Some(map)) => gates.add_bonus(t, logits, c, earlier, map),
            (None, _) => Ok(logits),
            (Some(_), None) => Err(crate::error::Error::Other(
                "the copy path needs the copy map".into(),
            )),
        }
    }

    /// Teacher-forced logits of all three channels: `(B, 3, L, h, w)`.
    pub fn forward(
        &self,
        trunk: &Tensor,
        target: &Values,
        copy: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.trunk(trunk)?;
        let earlier = [target.channel(0)?, target.channel(1)?];
        let mut out = Vec::with_capacity(3);
        for c in 0..3 {
            out.push(
                self.channel_logits(&t, c, &earlier, copy)?
                    .f_permute([0, 3, 1, 2])?,
            );
        }
        Ok(Tensor::f_stack(&out, 1)?)
    }
}

/// Starts the gates of the palette and the line entries closed (zero weights, bias -4: a bonus of 0.018 nats), so that a model warm
/// started from one without the palette (`train::warm_start` keeps the old rows) begins with its density
/// unchanged: random gates on trained features gave each palette colour nats of bonus, and the 64 run's
/// training loss went from 0.97 to 1.42 bits/dim in its first 100 steps.
fn close_palette(gate: &nn::Linear) -> Result<()> {
    let first = 3 * (IMAGE.len() + IN_SLICE.len()) as i64;
    let n = gate.ws.size().first().copied().unwrap_or(0) - first;
    tch::no_grad(|| -> Result<()> {
        let _ = gate.ws.f_narrow(0, first, n)?.f_zero_()?;
        if let Some(b) = &gate.bs {
            let _ = b.f_narrow(0, first, n)?.f_fill_(-4.0)?;
        }
        Ok(())
    })
}

impl CopyGates {
    /// `neighbours::add_copy_bonus` on libtorch, for every position at once: `t` `(B, h, w, D)`, `logits`
    /// `(B, h, w, L)`, `map` `(B, h, w, E, 3)`.
    fn add_bonus(
        &self,
        t: &Tensor,
        logits: Tensor,
        c: usize,
        earlier: &[Values],
        map: &Tensor,
    ) -> Result<Tensor> {
        let n = self.entries;
        let (b, h, w, _) = logits.size4()?;
        let map = map.f_view([b, h, w, n, 3])?;
        let level = |ch: usize| map.f_select(4, ch as i64); // (B, h, w, N)
        let valid = |v: &Tensor| v.f_ge(0)?.f_to_kind(Kind::Float);
        let z = linear(t, &self.gate)?
            .f_view([b, h, w, n, 3])?
            .f_select(4, c as i64)?;
        let agree = self.agree.f_view([n, 3])?.f_select(1, c as i64)?; // (N,)
        let mut matched = Tensor::f_zeros_like(&z)?;
        for (ch, v) in earlier.iter().enumerate().take(c) {
            let nb = level(ch)?;
            let same = match v {
                Values::Hard(e) => e
                    .f_unsqueeze(-1)?
                    .f_eq_tensor(&nb)?
                    .f_to_kind(Kind::Float)?,
                // One-hot: the probability mass on the neighbour's level.
                Values::Soft(e) => {
                    e.f_permute([0, 2, 3, 1])?
                        .f_gather(3, &nb.f_clamp_min(0)?, false)?
                }
            };
            matched = matched.f_add(&same.f_mul(&valid(&nb)?)?)?;
        }
        let v = level(c)?;
        let bonus = z
            .f_add(&matched.f_mul(&agree)?)?
            .f_softplus()?
            .f_mul(&valid(&v)?)?;
        Ok(logits.f_scatter_add(3, &v.f_clamp_min(0)?, &bonus)?)
    }
}
