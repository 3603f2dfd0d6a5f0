//! The causal building blocks of the masked decoder: masked convolutions and causal self-attention.
use crate::error::Result;
use tch::{nn, Kind, Tensor};

/// A k x k convolution that only sees rows above and, on its own row, columns to the left (raster order).
/// `include_center` is false for the first layer (strictly causal) and true after it.
#[derive(Debug)]
pub struct MaskedConv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    mask: Tensor,
    pub kernel: i64,
}

impl MaskedConv2d {
    pub fn new(vs: nn::Path, cin: i64, cout: i64, kernel: i64, include_center: bool) -> Self {
        let weight = vs.var("weight", &[cout, cin, kernel, kernel], nn::init::DEFAULT_KAIMING_UNIFORM);
        let bias = vs.zeros("bias", &[cout]);
        let c = kernel / 2;
        let mut m = vec![0f32; (kernel * kernel) as usize];
        for r in 0..kernel {
            for q in 0..kernel {
                let visible = r < c || (r == c && (q < c || (q == c && include_center)));
                m[(r * kernel + q) as usize] = if visible { 1.0 } else { 0.0 };
            }
        }
        let mask = Tensor::from_slice(&m).view([1, 1, kernel, kernel]).to_device(vs.device());
        Self { weight, bias, mask, kernel }
    }

    pub fn masked_weight(&self) -> Result<Tensor> {
        Ok(self.weight.f_mul(&self.mask)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.kernel / 2;
        Ok(x.f_conv2d(&self.masked_weight()?, Some(&self.bias), [1, 1], [p, p], [1, 1], 1)?)
    }
}

/// Multi-head self-attention over the positions of a slice in raster order; position p attends to <= p.
#[derive(Debug)]
pub struct CausalSelfAttention {
    norm: nn::LayerNorm,
    qkv: nn::Linear,
    out: nn::Linear,
    pos: Tensor,
    pub heads: i64,
}

impl CausalSelfAttention {
    pub fn new(vs: nn::Path, dim: i64, heads: i64, positions: i64) -> Self {
        Self {
            norm: nn::layer_norm(&vs / "norm", vec![dim], Default::default()),
            qkv: nn::linear(&vs / "qkv", dim, 3 * dim, Default::default()),
            out: nn::linear(&vs / "out", dim, dim, Default::default()),
            pos: vs.var("pos", &[positions, dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            heads,
        }
    }

    /// `(B, D, h, w)` -> the residual update `(B, D, h, w)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d, h, w) = x.size4()?;
        let n = h * w;
        let t = x.f_flatten(2, 3)?.f_transpose(1, 2)?; // (B, n, D)
        let t = t.f_add(&self.pos)?.apply(&self.norm);
        let dh = d / self.heads;
        let qkv = t.apply(&self.qkv).f_reshape([b, n, 3, self.heads, dh])?.f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
        let causal = Tensor::f_ones([n, n], (Kind::Bool, x.device()))?.f_tril(0)?;
        let y = Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(&causal), 0.0, false, None::<f64>, false)?;
        let y = y.f_permute([0, 2, 1, 3])?.f_reshape([b, n, d])?.apply(&self.out);
        Ok(y.f_transpose(1, 2)?.f_reshape([b, d, h, w])?)
    }
}
