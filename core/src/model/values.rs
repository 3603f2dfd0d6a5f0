//! Discrete sub-pixel values as network input: hard integers, or soft one-hot vectors so that tests can
//! take gradients with respect to every input sub-pixel (the causality invariant).
use crate::error::Result;
use tch::{Kind, Tensor};

/// `Hard`: integer levels `(B, C, ..., H, W)`. `Soft`: one-hot floats `(B, C, L, ..., H, W)`.
#[derive(Debug)]
pub enum Values {
    Hard(Tensor),
    Soft(Tensor),
}

impl Values {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Values::Hard(t) | Values::Soft(t) => t,
        }
    }

    pub fn shallow_clone(&self) -> Values {
        match self {
            Values::Hard(t) => Values::Hard(t.shallow_clone()),
            Values::Soft(t) => Values::Soft(t.shallow_clone()),
        }
    }

    fn map(&self, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Values> {
        Ok(match self {
            Values::Hard(t) => Values::Hard(f(t)?),
            Values::Soft(t) => Values::Soft(f(t)?),
        })
    }

    pub fn to_slices(&self, s: i64) -> Result<Values> {
        self.map(|t| crate::subscale::to_slices(t, s))
    }

    /// Slice `k` of a slice stack (`(..., S*S, h, w)` -> `(..., h, w)`).
    pub fn select_slice(&self, k: i64) -> Result<Values> {
        self.map(|t| Ok(t.f_select(t.dim() as i64 - 3, k)?))
    }

    /// Slice `k[b]` for every example `b` of a slice stack.
    pub fn gather_slice(&self, k: &Tensor) -> Result<Values> {
        self.map(|t| {
            let size = t.size();
            let n = size.len();
            let mut view = vec![1i64; n];
            view[0] = size[0];
            let mut expand = size.clone();
            expand[n - 3] = 1;
            let idx = k
                .f_view(view.as_slice())?
                .f_expand(expand.as_slice(), false)?;
            Ok(t.f_gather(n as i64 - 3, &idx, false)?
                .f_squeeze_dim(n as i64 - 3)?)
        })
    }

    /// Channel `c` (dim 1), keeping the batch dim.
    pub fn channel(&self, c: i64) -> Result<Values> {
        self.map(|t| Ok(t.f_select(1, c)?))
    }

    /// Values scaled to [-1, 1], the one-hot level dim reduced away: `(B, C, ..., H, W)` floats.
    pub fn normalized(&self, levels: i64) -> Result<Tensor> {
        let scale = 2.0 / (levels - 1).max(1) as f64;
        match self {
            Values::Hard(t) => Ok(t
                .f_to_kind(Kind::Float)?
                .f_mul_scalar(scale)?
                .f_sub_scalar(1.0)?),
            Values::Soft(t) => {
                let n = t.dim();
                let mut view = vec![1i64; n];
                view[2] = levels;
                let lv = Tensor::f_arange(levels, (Kind::Float, t.device()))?
                    .f_mul_scalar(scale)?
                    .f_sub_scalar(1.0)?
                    .f_view(view.as_slice())?;
                Ok(t.f_mul(&lv)?.f_sum_dim_intlist(2, false, Kind::Float)?)
            }
        }
    }

    /// Embedding lookup of a single-channel value map `(B, h, w)` -> `(B, h, w, D)`.
    /// For soft values `(B, L, h, w)` it is the same lookup written as a product with the one-hot vector.
    pub fn embed(&self, emb: &super::layers::Embedding) -> Result<Tensor> {
        match self {
            Values::Hard(t) => Ok(Tensor::f_embedding(&emb.ws, t, -1, false, false)?),
            Values::Soft(t) => Ok(t.f_permute([0, 2, 3, 1])?.f_matmul(&emb.ws)?),
        }
    }
}
