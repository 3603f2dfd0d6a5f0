//! The slice embedder (conditioning network): sees every known slice, unmasked, once per target slice.
use super::layers::{conv2d_same, dropout, new_conv2d, new_embedding, Conv2d, Embedding};
use crate::config::StageSpec;
use crate::error::Result;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct SliceEmbedder {
    pub(crate) input: Conv2d,
    pub(crate) blocks: Vec<(Conv2d, Conv2d)>,
    /// Learned embedding of the target's meta-position k: tells the network which slices are present.
    pub(crate) meta: Embedding,
    dropout: f64,
}

impl SliceEmbedder {
    pub fn new(vs: nn::Path, spec: &StageSpec) -> Result<Self> {
        let d = spec.net.channels;
        // 3x3, padded to keep the size (by `conv2d_same`).
        let conv = |p: nn::Path, cin| new_conv2d(&p, cin, d, 3);
        let blocks = (0..spec.net.embed_blocks)
            .map(|i| {
                let b = &vs / "blocks" / i;
                Ok((conv(&b / "conv1", d)?, conv(&b / "conv2", d)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            input: conv(&vs / "input", spec.cond_channels())?,
            blocks,
            meta: new_embedding(&(&vs / "meta"), spec.slices(), d)?,
            dropout: spec.net.dropout,
        })
    }

    /// `cond`: `(B, cond_channels, h, w)`, `k`: `(B,)` target slice indices -> context `(B, D, h, w)`.
    /// `train`: apply the config's dropout.
    pub fn forward_t(&self, cond: &Tensor, k: &Tensor, train: bool) -> Result<Tensor> {
        let meta = Tensor::f_embedding(&self.meta.ws, k, -1, false, false)?
            .f_unsqueeze(-1)?
            .f_unsqueeze(-1)?;
        let mut x = conv2d_same(cond, &self.input)?.f_add(&meta)?;
        for (c1, c2) in &self.blocks {
            let h = conv2d_same(&x.f_relu()?, c1)?.f_relu()?;
            let y = conv2d_same(&dropout(&h, self.dropout, train)?, c2)?;
            x = x.f_add(&y)?;
        }
        Ok(x)
    }
}
