//! Incremental decoding: per-layer caches (the rows a masked convolution sees; keys and values of
//! attention) so that each step computes only the new position. Its logits equal the full pass's.
use super::neighbours::CopyRows;
use crate::error::Result;
use crate::model::layers::{conv2d_same, linear};
use crate::model::SpnNet;
use crate::model::Values;
use tch::{Kind, Tensor};

/// Decoder weights rearranged once for single-position matrix products.
pub struct StepWeights {
    /// First masked conv over the rows it sees: `(3 * (p+1) * k, D)`.
    w_in: Tensor,
    b_in: Tensor,
    /// Per block: conv over rows r-1..r `(D * 2 * 3, 2D)`, and the 1x1 output `(D, D)`.
    w_conv: Vec<(Tensor, Tensor)>,
    w_out: Vec<(Tensor, Tensor)>,
}

impl StepWeights {
    pub fn new(net: &SpnNet) -> Result<Self> {
        let dec = &net.decoder;
        let d = dec.channels;
        let k = dec.input.kernel;
        let p = k / 2;
        let w_in = dec
            .input
            .masked_weight()?
            .f_narrow(2, 0, p + 1)?
            .f_reshape([d, -1])?
            .f_t_()?
            .f_contiguous()?;
        let mut w_conv = Vec::new();
        let mut w_out = Vec::new();
        for b in &dec.blocks {
            let w = b
                .conv
                .masked_weight()?
                .f_narrow(2, 0, 2)?
                .f_reshape([2 * d, -1])?
                .f_t_()?
                .f_contiguous()?;
            w_conv.push((w, b.conv.bias.shallow_clone()));
            let wo = b.out.ws.f_reshape([d, d])?.f_t_()?.f_contiguous()?;
            let bo = b
                .out
                .bs
                .as_ref()
                .map(|t| t.shallow_clone())
                .unwrap_or(Tensor::f_zeros([d], (Kind::Float, wo.device()))?);
            w_out.push((wo, bo));
        }
        Ok(Self {
            w_in,
            b_in: dec.input.bias.shallow_clone(),
            w_conv,
            w_out,
        })
    }
}

struct AttnCache {
    feats: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The decoding state of one slice for a batch.
pub struct SliceDecoder<'a> {
    net: &'a SpnNet,
    w: &'a StepWeights,
    b: i64,
    wd: i64,
    ctx: Tensor,
    proj: Tensor,
    /// Normalised pixels, padded for the first conv: `(B, 3, h + p, w + 2p)`.
    pix: Tensor,
    /// Normalised pixels per position `(B, n, 3)` for attention keys.
    pix_flat: Tensor,
    /// Block inputs, padded for the 3x3 convs: `(B, D, h + 1, w + 2)`.
    xs: Vec<Tensor>,
    attn: Vec<Option<AttnCache>>,
    pad: i64,
}

impl<'a> SliceDecoder<'a> {
    /// `ctx`: the slice embedder's output `(B, D, h, w)`, computed once per slice.
    pub fn new(net: &'a SpnNet, w: &'a StepWeights, ctx: &Tensor) -> Result<Self> {
        let (b, d, h, wd) = ctx.size4()?;
        let n = h * wd;
        let dev = ctx.device();
        let opts = (Kind::Float, dev);
        let proj = conv2d_same(ctx, &net.decoder.context)?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?
            .f_contiguous()?;
        let ctx_cl = ctx.f_flatten(2, 3)?.f_transpose(1, 2)?.f_contiguous()?;
        let pad = net.decoder.input.kernel / 2;
        let mut xs = Vec::new();
        let mut attn = Vec::new();
        for blk in &net.decoder.blocks {
            xs.push(Tensor::f_zeros([b, d, h + 1, wd + 2], opts)?);
            attn.push(match &blk.attention {
                Some(a) => {
                    // Values of all heads side by side, `(B, n + 1, D)`, the sink at row 0; keys stored
                    // transposed, `(B, D, n + 1)`, so that a prefix of them is a plain strided matrix.
                    let mk = |i: i64| -> Result<Tensor> {
                        let t = Tensor::f_zeros([b, n + 1, d], opts)?;
                        t.f_narrow(1, 0, 1)?.f_copy_(
                            &a.sink
                                .f_get(i)?
                                .f_view([1, 1, d])?
                                .f_expand([b, 1, d], false)?,
                        )?;
                        Ok(t)
                    };
                    let kt = mk(0)?.f_transpose(1, 2)?.f_contiguous()?;
                    Some(AttnCache {
                        feats: Tensor::f_zeros([b, n, d], opts)?,
                        k: kt,
                        v: mk(1)?,
                    })
                }
                None => None,
            });
        }
        Ok(Self {
            net,
            w,
            b,
            wd,
            ctx: ctx_cl,
            proj,
            pix: Tensor::f_zeros([b, 3, h + pad, wd + 2 * pad], opts)?,
            pix_flat: Tensor::f_zeros([b, n, 3], opts)?,
            xs,
            attn,
            pad,
        })
    }

    /// Trunk features at position `pos` (raster index) after the head's projection: `(B, 1, 1, D)`.
    /// Needs every pixel before `pos` committed.
    pub fn features(&mut self, pos: i64) -> Result<Tensor> {
        let (r, c) = (pos / self.wd, pos % self.wd);
        let dec = &self.net.decoder;
        let d = dec.channels;
        let k = dec.input.kernel;
        let patch = self
            .pix
            .f_narrow(2, r, self.pad + 1)?
            .f_narrow(3, c, k)?
            .f_reshape([self.b, -1])?;
        let mut x = self
            .w
            .b_in
            .f_addmm(&patch, &self.w.w_in)?
            .f_add(&self.ctx.f_select(1, pos)?)?;
        let proj = self.proj.f_select(1, pos)?;
        for (i, blk) in dec.blocks.iter().enumerate() {
            let cache = &self.xs[i];
            cache
                .f_narrow(2, r + 1, 1)?
                .f_narrow(3, c + 1, 1)?
                .f_copy_(&x.f_view([self.b, d, 1, 1])?)?;
            let patch = cache
                .f_narrow(2, r, 2)?
                .f_narrow(3, c, 3)?
                .f_reshape([self.b, -1])?;
            let (wc, bc) = &self.w.w_conv[i];
            let hcat =
                bc.f_addmm(&patch, wc)?
                    .f_add(&proj.f_narrow(1, 2 * d * i as i64, 2 * d)?)?;
            let gate = hcat
                .f_narrow(1, 0, d)?
                .f_tanh()?
                .f_mul(&hcat.f_narrow(1, d, d)?.f_sigmoid()?)?;
            let (wo, bo) = &self.w.w_out[i];
            x = x.f_add(&bo.f_addmm(&gate, wo)?)?;
            if let (Some(a), Some(cache)) = (&blk.attention, &self.attn[i]) {
                let f = a.features(&x, &a.pos.f_select(0, pos)?)?;
                cache.feats.f_select(1, pos)?.f_copy_(&f)?;
                let (heads, dh) = (a.heads, d / a.heads);
                let keys = cache.k.f_narrow(2, 0, pos + 1)?; // (B, D, p + 1)
                let vals = cache.v.f_narrow(1, 0, pos + 1)?; // (B, p + 1, D)
                                                             // Scores of every head at once: an elementwise product summed within each head (cheaper
                                                             // here than many tiny per-head matrix products).
                let q = linear(&f, &a.q)?.f_view([self.b, d, 1])?;
                let att = keys
                    .f_mul(&q)?
                    .f_view([self.b, heads, dh, pos + 1])?
                    .f_sum_dim_intlist(2, false, Kind::Float)?
                    .f_mul_scalar(1.0 / (dh as f64).sqrt())?
                    .f_softmax(-1, Kind::Float)?; // (B, H, p + 1)
                let w = att
                    .f_transpose(1, 2)?
                    .f_unsqueeze(-1)?
                    .f_expand([self.b, pos + 1, heads, dh], false)?;
                let y = linear(
                    &vals
                        .f_view([self.b, pos + 1, heads, dh])?
                        .f_mul(&w)?
                        .f_sum_dim_intlist(1, false, Kind::Float)?
                        .f_reshape([self.b, d])?,
                    &a.out,
                )?;
                x = x.f_add(&y)?;
            }
        }
        self.net.head.trunk(&x.f_view([self.b, d, 1, 1])?)
    }

    pub fn device(&self) -> tch::Device {
        self.ctx.device()
    }

    /// Records the pixel at `pos` (values `(B, 3)`, integer levels) so later positions can see it.
    pub fn commit(&mut self, pos: i64, values: &Tensor) -> Result<()> {
        let (r, c) = (pos / self.wd, pos % self.wd);
        let levels = self.net.spec.levels();
        let norm = Values::Hard(values.shallow_clone()).normalized(levels)?; // (B, 3)
        self.pix
            .f_narrow(2, r + self.pad, 1)?
            .f_narrow(3, c + self.pad, 1)?
            .f_copy_(&norm.f_view([self.b, 3, 1, 1])?)?;
        self.pix_flat.f_select(1, pos)?.f_copy_(&norm)?;
        for (blk, cache) in self.net.decoder.blocks.iter().zip(&self.attn) {
            if let (Some(a), Some(cache)) = (&blk.attention, cache) {
                let d = self.net.decoder.channels;
                let kv = a.keys_values(&cache.feats.f_select(1, pos)?, &norm)?; // (B, 2D)
                cache
                    .k
                    .f_select(2, pos + 1)?
                    .f_copy_(&kv.f_narrow(1, 0, d)?)?;
                cache
                    .v
                    .f_select(1, pos + 1)?
                    .f_copy_(&kv.f_narrow(1, d, d)?)?;
            }
        }
        Ok(())
    }
}

/// The tensor engine behind the common interface: its caches on the model's device, the head's logits
/// brought to the host for the sampler's draw.
pub struct TensorSlice<'a> {
    net: &'a SpnNet,
    dec: SliceDecoder<'a>,
    feats: Option<Tensor>,
    logits: Vec<f32>,
    /// The group's copy rows, and those at the current position `(G, 1, 1, E, 3)`.
    copy: Option<CopyRows>,
    copy_at: Option<Tensor>,
}

impl<'a> TensorSlice<'a> {
    pub fn new(
        net: &'a SpnNet,
        w: &'a StepWeights,
        ctx: &Tensor,
        copy: Option<CopyRows>,
    ) -> Result<Self> {
        Ok(Self {
            net,
            dec: SliceDecoder::new(net, w, ctx)?,
            feats: None,
            logits: Vec::new(),
            copy,
            copy_at: None,
        })
    }
}

impl super::SliceDecoding for TensorSlice<'_> {
    fn features(&mut self, pos: usize) -> Result<()> {
        self.feats = Some(self.dec.features(pos as i64)?);
        self.copy_at = super::torch::copy_at(self.copy.as_mut(), pos, self.dec.device())?;
        Ok(())
    }

    fn channel_logits(&mut self, ch: usize, chosen: &[[i64; 3]]) -> Result<&[f32]> {
        super::torch::head_logits(
            self.net,
            self.feats.as_ref(),
            ch,
            chosen,
            self.copy_at.as_ref(),
            &mut self.logits,
        )
    }

    fn commit(&mut self, pos: usize, values: &[[i64; 3]]) -> Result<()> {
        if let Some(rows) = self.copy.as_mut() {
            rows.commit(pos, values);
        }
        let px = super::torch::pixels(values, self.dec.device())?;
        self.dec.commit(pos as i64, &px)
    }
}
