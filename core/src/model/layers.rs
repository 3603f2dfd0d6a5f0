//! The causal building blocks of the masked decoder: masked convolutions and causal self-attention.
use crate::error::Result;
use tch::{nn, Kind, Tensor};

// Fallible forms of tch's layer calls: `forward`/`apply` panic on any libtorch error (CUDA out of memory,
// a device mismatch), which must reach users as an error value instead. Building layers too: tch's
// `nn::conv2d`, `nn::linear`, `nn::embedding` and `nn::layer_norm` panic when libtorch cannot allocate, so
// the layers here are made by the functions below, with the same variables, names, order and
// initialisation (the same random draws for a seed), through the VarStore's fallible `f_var`.

/// A 2-D convolution's weights, `(out, in, k, k)` and `(out,)`.
#[derive(Debug)]
pub struct Conv2d {
    pub ws: Tensor,
    pub bs: Option<Tensor>,
}

/// An embedding table `(n, dim)`.
#[derive(Debug)]
pub struct Embedding {
    pub ws: Tensor,
}

/// A layer norm's affine weights over the last dimensions (eps [`LAYER_NORM_EPS`]).
#[derive(Debug)]
pub struct LayerNorm {
    pub ws: Option<Tensor>,
    pub bs: Option<Tensor>,
    pub normalized_shape: Vec<i64>,
}

/// `nn::conv2d` with its defaults: zero bias, Kaiming-uniform weight.
pub fn new_conv2d(vs: &nn::Path, cin: i64, cout: i64, k: i64) -> Result<Conv2d> {
    let bs = vs.f_zeros("bias", &[cout])?;
    let ws = vs.f_var(
        "weight",
        &[cout, cin, k, k],
        nn::init::DEFAULT_KAIMING_UNIFORM,
    )?;
    Ok(Conv2d { ws, bs: Some(bs) })
}

/// `nn::linear` with its defaults: bias uniform in +-1/sqrt(cin), then a Kaiming-uniform weight.
pub fn new_linear(vs: &nn::Path, cin: i64, cout: i64) -> Result<nn::Linear> {
    let bound = 1.0 / (cin as f64).sqrt();
    let bs = vs.f_var(
        "bias",
        &[cout],
        nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    let ws = vs.f_var("weight", &[cout, cin], nn::init::DEFAULT_KAIMING_UNIFORM)?;
    Ok(nn::Linear { ws, bs: Some(bs) })
}

/// `nn::embedding` with its default: standard normal weights.
pub fn new_embedding(vs: &nn::Path, n: i64, dim: i64) -> Result<Embedding> {
    let ws = vs.f_var(
        "weight",
        &[n, dim],
        nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )?;
    Ok(Embedding { ws })
}

/// `nn::layer_norm` with its defaults: unit weight, zero bias.
pub fn new_layer_norm(vs: &nn::Path, dim: i64) -> Result<LayerNorm> {
    let ws = vs.f_ones("weight", &[dim])?;
    let bs = vs.f_zeros("bias", &[dim])?;
    Ok(LayerNorm {
        ws: Some(ws),
        bs: Some(bs),
        normalized_shape: vec![dim],
    })
}

/// A trainable variable drawn from N(0, stdev^2): `f_var`'s normal initialisation scales the draw with a
/// panicking operator; this is the same draw, scaled fallibly.
pub fn new_randn(vs: &nn::Path, name: &str, dims: &[i64], stdev: f64) -> Result<Tensor> {
    let t = Tensor::f_randn(dims, (vs.kind(), vs.device()))?.f_mul_scalar(stdev)?;
    Ok(vs.add(name, t, true))
}

pub fn linear(x: &Tensor, l: &nn::Linear) -> Result<Tensor> {
    Ok(x.f_linear(&l.ws, l.bs.as_ref())?)
}

/// A stride-1 convolution padded to keep the size (odd kernels), the only kind the plain layers here use.
pub fn conv2d_same(x: &Tensor, c: &Conv2d) -> Result<Tensor> {
    let (kh, kw) = match c.ws.size()[..] {
        [_, _, kh, kw] => (kh, kw),
        _ => return Err(crate::error::Error::Other("conv weight is not 4-D".into())),
    };
    Ok(x.f_conv2d(&c.ws, c.bs.as_ref(), [1, 1], [kh / 2, kw / 2], [1, 1], 1)?)
}

/// Inverted dropout while training (kept activations scaled by 1/(1-p)), the identity otherwise: a trained
/// network is used as is.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if train && p > 0.0 {
        Ok(x.f_dropout(p, true)?)
    } else {
        Ok(x.shallow_clone())
    }
}

/// `nn::LayerNorm`'s default epsilon, which the attention layers are built with.
pub const LAYER_NORM_EPS: f64 = 1e-5;

pub fn layer_norm(x: &Tensor, n: &LayerNorm) -> Result<Tensor> {
    Ok(x.f_layer_norm(
        n.normalized_shape.as_slice(),
        n.ws.as_ref(),
        n.bs.as_ref(),
        LAYER_NORM_EPS,
        true,
    )?)
}

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
    pub fn new(
        vs: nn::Path,
        cin: i64,
        cout: i64,
        kernel: i64,
        include_center: bool,
    ) -> Result<Self> {
        let weight = vs.f_var(
            "weight",
            &[cout, cin, kernel, kernel],
            nn::init::DEFAULT_KAIMING_UNIFORM,
        )?;
        let bias = vs.f_zeros("bias", &[cout])?;
        let c = kernel / 2;
        let mut m = vec![0f32; (kernel * kernel) as usize];
        for r in 0..kernel {
            for q in 0..kernel {
                let visible = r < c || (r == c && (q < c || (q == c && include_center)));
                m[(r * kernel + q) as usize] = if visible { 1.0 } else { 0.0 };
            }
        }
        let mask = Tensor::f_from_slice(&m)?
            .f_view([1, 1, kernel, kernel])?
            .f_to_device(vs.device())?;
        Ok(Self {
            weight,
            bias,
            mask,
            kernel,
        })
    }

    pub fn masked_weight(&self) -> Result<Tensor> {
        Ok(self.weight.f_mul(&self.mask)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.kernel / 2;
        Ok(x.f_conv2d(
            &self.masked_weight()?,
            Some(&self.bias),
            [1, 1],
            [p, p],
            [1, 1],
            1,
        )?)
    }
}

/// Multi-head self-attention over the positions of a slice in raster order. Position p attends to the
/// positions q < p, whose keys and values also see the pixel at q itself (the convolutions' features at q
/// do not), plus a learned "sink" slot so that the first position has something to attend to.
#[derive(Debug)]
pub struct CausalSelfAttention {
    pub norm: LayerNorm,
    pub q: nn::Linear,
    pub kv: nn::Linear,
    /// Pixel values (3 channels) into the key/value input.
    pub pixel: nn::Linear,
    pub out: nn::Linear,
    pub pos: Tensor,
    pub sink: Tensor,
    pub heads: i64,
}

impl CausalSelfAttention {
    pub fn new(vs: nn::Path, dim: i64, heads: i64, positions: i64) -> Result<Self> {
        Ok(Self {
            norm: new_layer_norm(&(&vs / "norm"), dim)?,
            q: new_linear(&(&vs / "q"), dim, dim)?,
            kv: new_linear(&(&vs / "kv"), dim, 2 * dim)?,
            pixel: new_linear(&(&vs / "pixel"), 3, dim)?,
            out: new_linear(&(&vs / "out"), dim, dim)?,
            pos: new_randn(&vs, "pos", &[positions, dim], 0.02)?,
            sink: new_randn(&vs, "sink", &[2, dim], 0.02)?,
            heads,
        })
    }

    /// Normalised features `(B, n, D)` with positions added: the input of queries, keys and values.
    pub fn features(&self, t: &Tensor, pos: &Tensor) -> Result<Tensor> {
        layer_norm(&t.f_add(pos)?, &self.norm)
    }

    /// Keys and values `(B, n, 2D)` from features and pixel values `(B, n, 3)`.
    pub fn keys_values(&self, f: &Tensor, pix: &Tensor) -> Result<Tensor> {
        linear(&f.f_add(&linear(pix, &self.pixel)?)?, &self.kv)
    }

    /// `(B, n, D)` -> `(B, heads, n, D/heads)`.
    pub fn split_heads(&self, t: &Tensor) -> Result<Tensor> {
        let (b, n, d) = t.size3()?;
        Ok(t.f_reshape([b, n, self.heads, d / self.heads])?
            .f_transpose(1, 2)?)
    }

    /// `x`: `(B, D, h, w)`, `pix`: the slice's pixels `(B, 3, h, w)` -> the residual update `(B, D, h, w)`.
    pub fn forward(&self, x: &Tensor, pix: &Tensor) -> Result<Tensor> {
        let (b, d, h, w) = x.size4()?;
        let n = h * w;
        let t = x.f_flatten(2, 3)?.f_transpose(1, 2)?; // (B, n, D)
        let p = pix.f_flatten(2, 3)?.f_transpose(1, 2)?; // (B, n, 3)
        let f = self.features(&t, &self.pos)?;
        let q = self.split_heads(&linear(&f, &self.q)?)?;
        let kv = Tensor::f_cat(
            &[
                self.sink
                    .f_reshape([1, 1, 2 * d])?
                    .f_expand([b, 1, 2 * d], false)?,
                self.keys_values(&f, &p)?,
            ],
            1,
        )?;
        let k = self.split_heads(&kv.f_narrow(2, 0, d)?)?;
        let v = self.split_heads(&kv.f_narrow(2, d, d)?)?;
        // Query p sees the sink (column 0) and keys q < p (column q + 1).
        let mask = Tensor::f_ones([n, n + 1], (Kind::Bool, x.device()))?.f_tril(0)?;
        let y = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&mask),
            0.0,
            false,
            None::<f64>,
            false,
        )?;
        let y = linear(&y.f_transpose(1, 2)?.f_reshape([b, n, d])?, &self.out)?;
        Ok(y.f_transpose(1, 2)?.f_reshape([b, d, h, w])?)
    }
}
