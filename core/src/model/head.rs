//! Output head with channel order: R from the trunk, G given R, B given R and G. The trunk runs once per
//! pixel; only this small head runs per channel.
use super::layers::{linear, new_embedding, new_linear, Embedding};
use super::values::Values;
use crate::error::Result;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct ChannelHead {
    pub proj: nn::Linear,
    pub r_to_g: Embedding,
    pub r_to_b: Embedding,
    pub g_to_b: Embedding,
    pub out: [nn::Linear; 3],
}

impl ChannelHead {
    pub fn new(vs: nn::Path, dim: i64, levels: i64) -> Result<Self> {
        let emb = |n: &str| new_embedding(&(&vs / n), levels, dim);
        let lin = |n: &str| new_linear(&(&vs / n), dim, levels);
        Ok(Self {
            proj: new_linear(&(&vs / "proj"), dim, dim)?,
            r_to_g: emb("r_to_g")?,
            r_to_b: emb("r_to_b")?,
            g_to_b: emb("g_to_b")?,
            out: [lin("out_r")?, lin("out_g")?, lin("out_b")?],
        })
    }

    /// Channel-last trunk features `(B, h, w, D)` after the shared projection.
    pub fn trunk(&self, trunk: &Tensor) -> Result<Tensor> {
        linear(&trunk.f_permute([0, 2, 3, 1])?.f_relu()?, &self.proj)
    }

    /// Logits of channel `c` at every position, `(B, h, w, L)`, given the features and the earlier channels'
    /// values (`earlier[i]` is channel i, `(B, h, w)` or one-hot `(B, L, h, w)`).
    pub fn channel_logits(&self, t: &Tensor, c: usize, earlier: &[Values]) -> Result<Tensor> {
        let h = match c {
            0 => t.shallow_clone(),
            1 => t.f_add(&earlier[0].embed(&self.r_to_g)?)?,
            _ => t
                .f_add(&earlier[0].embed(&self.r_to_b)?)?
                .f_add(&earlier[1].embed(&self.g_to_b)?)?,
        };
        linear(&h.f_relu()?, &self.out[c])
    }

    /// Teacher-forced logits of all three channels: `(B, 3, L, h, w)`.
    pub fn forward(&self, trunk: &Tensor, target: &Values) -> Result<Tensor> {
        let t = self.trunk(trunk)?;
        let earlier = [target.channel(0)?, target.channel(1)?];
        let mut out = Vec::with_capacity(3);
        for c in 0..3 {
            out.push(
                self.channel_logits(&t, c, &earlier)?
                    .f_permute([0, 3, 1, 2])?,
            );
        }
        Ok(Tensor::f_stack(&out, 1)?)
    }
}
