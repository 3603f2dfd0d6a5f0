//! The masked decoder: causal convolutions and causal self-attention over one slice, with the slice
//! embedder's context added into every block.
use super::layers::{conv2d_same, dropout, new_conv2d, CausalSelfAttention, Conv2d, MaskedConv2d};
use crate::config::StageSpec;
use crate::error::Result;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct GatedBlock {
    pub conv: MaskedConv2d,
    pub out: Conv2d,
    pub attention: Option<CausalSelfAttention>,
}

#[derive(Debug)]
pub struct MaskedDecoder {
    pub input: MaskedConv2d,
    /// One 1x1 projection of the context for all blocks at once (2D channels per block).
    pub context: Conv2d,
    pub blocks: Vec<GatedBlock>,
    pub channels: i64,
    dropout: f64,
}

impl MaskedDecoder {
    pub fn new(vs: nn::Path, spec: &StageSpec) -> Result<Self> {
        let net = &spec.net;
        let d = net.channels;
        let (h, w) = spec.slice_hw();
        let blocks = (0..net.decoder_blocks)
            .map(|i| {
                let b = &vs / "blocks" / i;
                let attention = (net.attention_every > 0 && (i + 1) % net.attention_every == 0)
                    .then(|| CausalSelfAttention::new(&b / "attention", d, net.heads, h * w))
                    .transpose()?;
                Ok(GatedBlock {
                    conv: MaskedConv2d::new(&b / "conv", d, 2 * d, 3, true)?,
                    out: new_conv2d(&(&b / "out"), d, d, 1)?,
                    attention,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            input: MaskedConv2d::new(&vs / "input", 3, d, net.first_kernel, false)?,
            context: new_conv2d(&(&vs / "context"), d, 2 * d * net.decoder_blocks.max(1), 1)?,
            blocks,
            channels: d,
            dropout: net.dropout,
        })
    }

    /// `x`: the target slice scaled to [-1, 1], `(B, 3, h, w)`; `ctx`: `(B, D, h, w)`.
    /// Output at position p depends on the context and on pixels of `x` strictly before p.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_t(x, ctx, false)
    }

    /// [`Self::forward`], with the config's dropout on each block's gated branch when `train`.
    pub fn forward_t(&self, x: &Tensor, ctx: &Tensor, train: bool) -> Result<Tensor> {
        let d = self.channels;
        let pix = x;
        let mut x = self.input.forward(x)?.f_add(ctx)?;
        let proj = conv2d_same(ctx, &self.context)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let hcat =
                block
                    .conv
                    .forward(&x)?
                    .f_add(&proj.f_narrow(1, 2 * d * i as i64, 2 * d)?)?;
            let gate = hcat
                .f_narrow(1, 0, d)?
                .f_tanh()?
                .f_mul(&hcat.f_narrow(1, d, d)?.f_sigmoid()?)?;
            let gate = dropout(&gate, self.dropout, train)?;
            x = x.f_add(&conv2d_same(&gate, &block.out)?)?;
            if let Some(att) = &block.attention {
                x = x.f_add(&att.forward(&x, pix)?)?;
            }
        }
        Ok(x)
    }
}
