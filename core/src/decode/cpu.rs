//! Incremental decoding on the CPU with libtorch out of the inner loop.
//!
//! A decoding step at batch 32 is about a hundred tiny tensor ops, and on a CPU their dispatch costs far more
//! than their arithmetic (docs/design.md section 6). So on the CPU a step runs as plain loops and small matrix products
//! over `f32` buffers (`matrixmultiply`, which picks AVX2/FMA kernels at run time), with two further savings:
//! - every masked convolution's taps on the rows above are computed once per row for the whole row, in one
//!   well-shaped matrix product; a step computes only its own row's taps;
//! - a decoder holds a group of images; the sampler gives each thread its own group for a whole slice, so
//!   threads never wait for each other within a slice.
//!
//! The arithmetic is the same as [`super::tensor::SliceDecoder`]'s and the full pass's; tests hold the
//! logits of all three to the same tolerance.
// Index loops over several equal-length rows at once read more plainly here than zipped iterators.
#![allow(clippy::needless_range_loop)]
use super::neighbours::{add_copy_bonus, CopyRows};
use crate::config::StageSpec;
use crate::error::Result;
use crate::weights::{HostTensor, Weights};

/// libtorch's default, which the network was trained with (`model::layers::layer_norm`).
pub(crate) const LAYER_NORM_EPS: f32 = 1e-5;

/// A linear layer `name` from `cin` to `cout` as an `(in, out)` row-major matrix, and its bias.
pub(crate) fn linear(
    w: &Weights,
    name: &str,
    cin: usize,
    cout: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    Ok((
        w.get(&format!("{name}.weight"), &[cout, cin])?
            .transposed()
            .data,
        w.get(&format!("{name}.bias"), &[cout])?.data.clone(),
    ))
}

/// A 1x1 convolution `name` as a linear layer.
fn conv1x1(w: &Weights, name: &str, cin: usize, cout: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let ws = w.get(&format!("{name}.weight"), &[cout, cin, 1, 1])?;
    Ok((
        HostTensor::new(vec![cout, cin], ws.data.clone())?
            .transposed()
            .data,
        w.get(&format!("{name}.bias"), &[cout])?.data.clone(),
    ))
}

/// A causal self-attention layer `name` (`model::layers::CausalSelfAttention`).
fn attention(w: &Weights, name: &str, d: usize, n: usize, heads: usize) -> Result<AttnWeights> {
    let get = |t: &str, shape: &[usize]| -> Result<Vec<f32>> {
        Ok(w.get(&format!("{name}.{t}"), shape)?.data.clone())
    };
    let lin = |t: &str, cin, cout| linear(w, &format!("{name}.{t}"), cin, cout);
    Ok(AttnWeights {
        ln_w: get("norm.weight", &[d])?,
        ln_b: get("norm.bias", &[d])?,
        pos: get("pos", &[n, d])?,
        q: lin("q", d, d)?,
        kv: lin("kv", d, 2 * d)?,
        pixel: lin("pixel", 3, d)?,
        out: lin("out", d, d)?,
        sink: get("sink", &[2, d])?,
        heads,
    })
}

/// `c (m x n, row stride ldc) = beta * c + a (m x k, row stride lda) * b (k x n, row-major)`.
/// Rows of `a` may overlap (`lda < k`): a sliding window over a row of pixels is read in place.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: c too short");
    if k == 0 {
        for i in 0..m {
            for v in &mut c[i * ldc..i * ldc + n] {
                *v *= beta;
            }
        }
        return;
    }
    assert!(a.len() >= (m - 1) * lda + k, "gemm: a too short");
    assert!(b.len() >= k * n, "gemm: b too short");
    // SAFETY: the asserts above keep every index the product reads or writes inside the slices; `c` is a
    // unique borrow, and `a`/`b` are only read.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        )
    }
}

/// `exp` to about one ulp (Cephes' polynomial), branch-free so that loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-88.0, 88.0);
    let fx = x * std::f32::consts::LOG2_E + 0.5;
    let t = fx as i32 as f32;
    let n = if t > fx { t - 1.0 } else { t };
    let x = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = x * x;
    let y = (((((1.987_569_1e-4 * x + 1.398_199_9e-3) * x + 8.333_452e-3) * x + 4.166_579_6e-2)
        * x
        + 1.666_666_5e-1)
        * x
        + 0.5)
        * z
        + x
        + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Width of the manual vector lanes: one AVX register of `f32`.
const LANES: usize = 8;

#[inline(always)]
fn lanes_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for x in acc.iter().chain(rest) {
        m = if *x > m { *x } else { m };
    }
    m
}

#[inline(always)]
fn lanes_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().chain(rest).sum()
}

/// `a * b + c`, fused where the code is compiled for FMA (elsewhere `mul_add` would be a slow library call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp(2.0 * x))
}

fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub(super) struct AttnWeights {
    pub(super) ln_w: Vec<f32>,
    pub(super) ln_b: Vec<f32>,
    /// Learned position embeddings `(n, D)`.
    pub(super) pos: Vec<f32>,
    pub(super) q: (Vec<f32>, Vec<f32>),
    pub(super) kv: (Vec<f32>, Vec<f32>),
    pub(super) pixel: (Vec<f32>, Vec<f32>),
    pub(super) out: (Vec<f32>, Vec<f32>),
    /// The sink's key and value, `(2, D)`.
    pub(super) sink: Vec<f32>,
    pub(super) heads: usize,
}

pub(super) struct BlockWeights {
    /// The 3x3 conv's taps on the row above, `(3 * D, 2D)` in `[dx][c_in]` order.
    pub(super) above: Vec<f32>,
    /// Its taps on the own row (left neighbour and centre), `(2 * D, 2D)`.
    pub(super) current: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) out: (Vec<f32>, Vec<f32>),
    pub(super) attention: Option<AttnWeights>,
}

pub(super) struct HeadWeights {
    pub(super) proj: (Vec<f32>, Vec<f32>),
    /// Embeddings `(L, D)` of R for G, R for B, G for B.
    pub(super) r_to_g: Vec<f32>,
    pub(super) r_to_b: Vec<f32>,
    pub(super) g_to_b: Vec<f32>,
    pub(super) out: [(Vec<f32>, Vec<f32>); 3],
    pub(super) copy: Option<CopyWeights>,
}

/// The head's copy path (`model::head::CopyGates`, and `model::head::LineSlopes` after it): gates
/// `(D, (E + K) * 3)` row-major with their bias, and the weights of the earlier channels' agreement; E
/// entries (`neighbours::entries`), K slopes (`neighbours::slopes`).
pub(super) struct CopyWeights {
    pub(super) gate: (Vec<f32>, Vec<f32>),
    pub(super) agree: Vec<f32>,
    /// `E * 3`: the copy map's row.
    pub(super) width: usize,
    /// `(E + K + K') * 3`: the gates'.
    pub(super) gates: usize,
    /// K', the blend entries' slopes (`neighbours::blend_slopes`).
    pub(super) blend_slopes: usize,
}

impl CopyWeights {
    fn new(w: &Weights, d: usize, net: &crate::config::NetConfig) -> Result<Self> {
        let width = 3 * super::neighbours::entries(net);
        let blend_slopes = super::neighbours::blend_slopes(net);
        let slopes = 3 * (super::neighbours::slopes(net) + blend_slopes);
        let (mut gate, mut agree) = (
            linear(w, "head.copy_gate", d, width)?,
            w.get("head.copy_agree", &[width])?.data.clone(),
        );
        if slopes > 0 {
            // One gemm for both: each row of the (D, E * 3) matrix continues with the slopes' row.
            let (mut sw, mut sb) = linear(w, "head.line_slope", d, slopes - 3 * blend_slopes)?;
            let mut sa = w.get("head.line_slope_agree", &[sb.len()])?.data.clone();
            if blend_slopes > 0 {
                let (bw, bb) = linear(w, "head.blend_slope", d, 3 * blend_slopes)?;
                sw = sw
                    .chunks_exact(sb.len())
                    .zip(bw.chunks_exact(bb.len()))
                    .flat_map(|(l, b)| l.iter().chain(b).copied())
                    .collect();
                sb.extend_from_slice(&bb);
                sa.extend_from_slice(&w.get("head.blend_slope_agree", &[bb.len()])?.data);
            }
            gate.0 = gate
                .0
                .chunks_exact(width)
                .zip(sw.chunks_exact(slopes))
                .flat_map(|(g, s)| g.iter().chain(s).copied())
                .collect();
            gate.1.extend_from_slice(&sb);
            agree.extend_from_slice(&sa);
        }
        Ok(Self {
            gate,
            agree,
            width,
            gates: width + slopes,
            blend_slopes,
        })
    }

    /// Gate logits `(m, (E + K) * 3)` of head features `t` `(m, D)` into `out`.
    pub(super) fn gates(&self, t: &[f32], m: usize, d: usize, out: &mut [f32]) {
        let gates = self.gates;
        for row in out[..m * gates].chunks_exact_mut(gates) {
            row.copy_from_slice(&self.gate.1);
        }
        gemm(m, d, gates, t, d, &self.gate.0, out, gates, 1.0);
    }
}

/// One stage's decoder and head weights, rearranged once per sampler for the CPU step.
pub struct CpuStepWeights {
    pub(super) d: usize,
    /// Half the first conv's kernel: the rows above it sees and the columns to the left on its own row.
    pub(super) p: usize,
    pub(super) kernel: usize,
    pub(super) levels: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    /// First conv's taps on the `p` rows above, `(p * k * 3, D)` in `[dy][dx][c_in]` order.
    pub(super) in_above: Vec<f32>,
    /// Its taps on the own row, `(p * 3, D)` in `[dx][c_in]` order.
    pub(super) in_left: Vec<f32>,
    pub(super) in_bias: Vec<f32>,
    pub(super) blocks: Vec<BlockWeights>,
    pub(super) head: HeadWeights,
    /// Run the step compiled for AVX2 and FMA (detected at run time).
    pub(super) avx2_fma: bool,
}

impl CpuStepWeights {
    /// The stage `spec`'s decoder and head from its weights `w` (names under the stage, `decoder.input.weight`),
    /// each held to the shape the spec gives it.
    pub fn new(spec: &StageSpec, w: &Weights) -> Result<Self> {
        let net = &spec.net;
        let d = net.channels as usize;
        let k = net.first_kernel as usize;
        let p = k / 2;
        let levels = spec.levels() as usize;
        let (h, wd) = spec.slice_hw();
        let (h, wd) = (h as usize, wd as usize);
        // Only the taps the masks let through are read (docs/design.md section 4): rows above, and on the
        // own row the columns to the left (the first conv) or the left and the centre (the blocks).
        let win = w.get("decoder.input.weight", &[d, 3, k, k])?;
        let in_above = win.narrow(2, 0, p).permute(&[2, 3, 1, 0]).data;
        let in_left = win.select(2, p).narrow(2, 0, p).permute(&[2, 1, 0]).data;
        let mut blocks = Vec::new();
        for i in 0..net.decoder_blocks as usize {
            let b = |n: &str| format!("decoder.blocks.{i}.{n}");
            let wc = w.get(&b("conv.weight"), &[2 * d, d, 3, 3])?;
            let attention = (net.attention_every > 0
                && (i + 1) % net.attention_every as usize == 0)
                .then(|| attention(w, &b("attention"), d, h * wd, net.heads as usize))
                .transpose()?;
            blocks.push(BlockWeights {
                above: wc.select(2, 0).permute(&[2, 1, 0]).data,
                current: wc.select(2, 1).narrow(2, 0, 2).permute(&[2, 1, 0]).data,
                bias: w.get(&b("conv.bias"), &[2 * d])?.data.clone(),
                out: conv1x1(w, &b("out"), d, d)?,
                attention,
            });
        }
        let emb = |n: &str| -> Result<Vec<f32>> {
            Ok(w.get(&format!("head.{n}.weight"), &[levels, d])?
                .data
                .clone())
        };
        let head = HeadWeights {
            proj: linear(w, "head.proj", d, d)?,
            r_to_g: emb("r_to_g")?,
            r_to_b: emb("r_to_b")?,
            g_to_b: emb("g_to_b")?,
            out: [
                linear(w, "head.out_r", d, levels)?,
                linear(w, "head.out_g", d, levels)?,
                linear(w, "head.out_b", d, levels)?,
            ],
            copy: spec
                .net
                .copy
                .then(|| CopyWeights::new(w, d, &spec.net))
                .transpose()?,
        };
        Ok(Self {
            d,
            p,
            kernel: k,
            levels,
            h,
            w: wd,
            in_above,
            in_left,
            in_bias: w.get("decoder.input.bias", &[d])?.data.clone(),
            blocks,
            head,
            avx2_fma: cpu_has_avx2_fma(),
        })
    }

    pub fn levels(&self) -> usize {
        self.levels
    }

    pub fn positions(&self) -> usize {
        self.h * self.w
    }

    pub fn width(&self) -> usize {
        self.w
    }

    pub fn channels(&self) -> usize {
        self.d
    }

    /// Width of the context projection per position: 2D per block.
    pub fn proj_width(&self) -> usize {
        2 * self.d * self.blocks.len()
    }
}

/// Attention caches of one block for a group.
struct AttnState {
    /// Normalised features of every position decoded so far, `(G, n, D)`.
    feats: Vec<f32>,
    /// Keys, transposed per head so that scoring runs along positions: `(G, D, n + 1)`, column 0 the sink.
    keys: Vec<f32>,
    /// Values `(G, n + 1, D)`, row 0 the sink.
    values: Vec<f32>,
}

/// The decoding state of one slice for a group of `g` images.
pub struct CpuSliceDecoder<'a> {
    w: &'a CpuStepWeights,
    g: usize,
    /// Slice context, channel-last `(G, n, D)`, and its per-block projection `(G, n, 2D * blocks)`.
    ctx: &'a [f32],
    proj: &'a [f32],
    /// Normalised pixels, padded for the first conv: `(G, h + p, w + 2p, 3)`.
    pix: Vec<f32>,
    /// Block inputs, padded for the 3x3 convs: `(G, h + 1, w + 2, D)` per block.
    xs: Vec<Vec<f32>>,
    attn: Vec<Option<AttnState>>,
    /// Contributions of the rows above to the current row: first conv `(G, w, D)`, blocks `(G, w, 2D)`.
    in_row: Vec<f32>,
    block_rows: Vec<Vec<f32>>,
    // Scratch, `(G, ...)`.
    x: Vec<f32>,
    hcat: Vec<f32>,
    gate: Vec<f32>,
    tmp: Vec<f32>,
    q: Vec<f32>,
    y: Vec<f32>,
    scores: Vec<f32>,
    trunk: Vec<f32>,
    hin: Vec<f32>,
    logits: Vec<f32>,
    /// The group's copy rows (None without the copy path), and the gate logits at the current position
    /// `(G, E * 3)`.
    copy: Option<CopyRows>,
    copy_gates: Vec<f32>,
}

impl<'a> CpuSliceDecoder<'a> {
    /// `ctx`: `(g, n, D)` and `proj`: `(g, n, 2D * blocks)`, channel-last, for this group.
    pub fn new(w: &'a CpuStepWeights, g: usize, ctx: &'a [f32], proj: &'a [f32]) -> Self {
        let (d, p, h, wd) = (w.d, w.p, w.h, w.w);
        let n = h * wd;
        assert_eq!(ctx.len(), g * n * d, "context size");
        assert_eq!(
            proj.len(),
            g * n * w.proj_width(),
            "context projection size"
        );
        let attn = w
            .blocks
            .iter()
            .map(|b| {
                b.attention.as_ref().map(|a| {
                    let mut keys = vec![0f32; g * d * (n + 1)];
                    let mut values = vec![0f32; g * (n + 1) * d];
                    for gi in 0..g {
                        for j in 0..d {
                            keys[(gi * d + j) * (n + 1)] = a.sink[j];
                        }
                        values[gi * (n + 1) * d..][..d].copy_from_slice(&a.sink[d..2 * d]);
                    }
                    AttnState {
                        feats: vec![0f32; g * n * d],
                        keys,
                        values,
                    }
                })
            })
            .collect();
        let nb = w.blocks.len();
        Self {
            w,
            g,
            ctx,
            proj,
            pix: vec![0f32; g * (h + p) * (wd + 2 * p) * 3],
            xs: (0..nb)
                .map(|_| vec![0f32; g * (h + 1) * (wd + 2) * d])
                .collect(),
            attn,
            in_row: vec![0f32; g * wd * d],
            block_rows: (0..nb).map(|_| vec![0f32; g * wd * 2 * d]).collect(),
            x: vec![0f32; g * d],
            hcat: vec![0f32; g * 2 * d],
            gate: vec![0f32; g * d],
            tmp: vec![0f32; g * 2 * d],
            q: vec![0f32; g * d],
            y: vec![0f32; g * d],
            scores: vec![0f32; n + 1],
            trunk: vec![0f32; g * d],
            hin: vec![0f32; g * d],
            logits: vec![0f32; g * w.levels],
            copy: None,
            copy_gates: vec![0f32; g * w.head.copy.as_ref().map_or(0, |c| c.gates)],
        }
    }

    /// The group's copy map `(G, n, E, 3)` (`neighbours::copy_map`), for a stage with the copy path.
    pub fn with_copy(mut self, copy: &[i32]) -> Result<Self> {
        if let Some(cw) = &self.w.head.copy {
            if copy.len() != self.g * self.w.h * self.w.w * cw.width {
                return Err(crate::Error::Other(
                    "the copy path needs the group's copy map".into(),
                ));
            }
            self.copy = Some(CopyRows::new(
                copy.to_vec(),
                (self.w.h, self.w.w),
                cw.width / 3,
            )?);
        }
        Ok(self)
    }

    fn pix_stride(&self) -> (usize, usize) {
        let w2 = self.w.w + 2 * self.w.p;
        ((self.w.h + self.w.p) * w2 * 3, w2 * 3)
    }

    fn xs_stride(&self) -> (usize, usize) {
        let w2 = self.w.w + 2;
        ((self.w.h + 1) * w2 * self.w.d, w2 * self.w.d)
    }

    /// Every conv's taps on the rows above row `r`, for the whole row: those rows are complete.
    fn row_start(&mut self, r: usize) {
        let wt = self.w;
        let (d, p, k, wd) = (wt.d, wt.p, wt.kernel, wt.w);
        let (img, row) = self.pix_stride();
        for gi in 0..self.g {
            let out = &mut self.in_row[gi * wd * d..][..wd * d];
            if p == 0 {
                out.fill(0.0);
            }
            for dy in 0..p {
                // Padded row r + dy is image row r - p + dy; column c's window starts at padded column c.
                let a = &self.pix[gi * img + (r + dy) * row..];
                let b = &wt.in_above[dy * k * 3 * d..][..k * 3 * d];
                gemm(
                    wd,
                    3 * k,
                    d,
                    a,
                    3,
                    b,
                    out,
                    d,
                    if dy == 0 { 0.0 } else { 1.0 },
                );
            }
        }
        let (ximg, xrow) = self.xs_stride();
        for (i, blk) in wt.blocks.iter().enumerate() {
            for gi in 0..self.g {
                // Padded row r is image row r - 1.
                let a = &self.xs[i][gi * ximg + r * xrow..];
                let out = &mut self.block_rows[i][gi * wd * 2 * d..][..wd * 2 * d];
                gemm(wd, 3 * d, 2 * d, a, d, &blk.above, out, 2 * d, 0.0);
            }
        }
    }

    /// Trunk features at `pos` (raster index) after the head's projection, `(G, D)`. Needs every pixel
    /// before `pos` committed.
    pub fn features(&mut self, pos: usize) -> &[f32] {
        #[cfg(target_arch = "x86_64")]
        if self.w.avx2_fma {
            // SAFETY: the CPU reported AVX2 and FMA (`CpuStepWeights::new`).
            unsafe { self.features_avx2_fma(pos) };
            self.copy_gates(pos);
            return &self.trunk;
        }
        self.features_impl::<false>(pos);
        self.copy_gates(pos);
        &self.trunk
    }

    /// The copy path's rows and gate logits at `pos`, once per position for all three channels.
    fn copy_gates(&mut self, pos: usize) {
        if let (Some(cw), Some(rows)) = (&self.w.head.copy, self.copy.as_mut()) {
            rows.at(pos);
            cw.gates(&self.trunk, self.g, self.w.d, &mut self.copy_gates);
        }
    }

    /// The same step compiled for AVX2 with fused multiply-adds: its loops run twice as wide.
    ///
    /// # Safety
    /// Only where the CPU has AVX2 and FMA (`CpuStepWeights::avx2_fma`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn features_avx2_fma(&mut self, pos: usize) {
        self.features_impl::<true>(pos)
    }

    #[inline(always)]
    fn features_impl<const FMA: bool>(&mut self, pos: usize) {
        let wt = self.w;
        let (d, p, wd, g) = (wt.d, wt.p, wt.w, self.g);
        let n = wt.h * wd;
        let (r, c) = (pos / wd, pos % wd);
        if c == 0 {
            self.row_start(r);
        }
        // First conv: rows above (precomputed) + own row's left taps + bias + context.
        for gi in 0..g {
            let x = &mut self.x[gi * d..][..d];
            let above = &self.in_row[(gi * wd + c) * d..][..d];
            let ctx = &self.ctx[(gi * n + pos) * d..][..d];
            for j in 0..d {
                x[j] = above[j] + wt.in_bias[j] + ctx[j];
            }
        }
        let (img, row) = self.pix_stride();
        gemm(
            g,
            3 * p,
            d,
            &self.pix[(r + p) * row + c * 3..],
            img,
            &wt.in_left,
            &mut self.x,
            d,
            1.0,
        );
        let (ximg, xrow) = self.xs_stride();
        let pw = wt.proj_width();
        for (i, blk) in wt.blocks.iter().enumerate() {
            let at = (r + 1) * xrow + (c + 1) * d;
            for gi in 0..g {
                self.xs[i][gi * ximg + at..][..d].copy_from_slice(&self.x[gi * d..][..d]);
                let hc = &mut self.hcat[gi * 2 * d..][..2 * d];
                let above = &self.block_rows[i][(gi * wd + c) * 2 * d..][..2 * d];
                let proj = &self.proj[(gi * n + pos) * pw + 2 * d * i..][..2 * d];
                for j in 0..2 * d {
                    hc[j] = above[j] + blk.bias[j] + proj[j];
                }
            }
            // Own row: the left neighbour and this position, adjacent in the padded row.
            gemm(
                g,
                2 * d,
                2 * d,
                &self.xs[i][at - d..],
                ximg,
                &blk.current,
                &mut self.hcat,
                2 * d,
                1.0,
            );
            for gi in 0..g {
                let hc = &self.hcat[gi * 2 * d..][..2 * d];
                let gate = &mut self.gate[gi * d..][..d];
                for j in 0..d {
                    gate[j] = tanh(hc[j]) * sigmoid(hc[d + j]);
                }
            }
            gemm(g, d, d, &self.gate, d, &blk.out.0, &mut self.tmp, d, 0.0);
            for gi in 0..g {
                let x = &mut self.x[gi * d..][..d];
                let t = &self.tmp[gi * d..][..d];
                for j in 0..d {
                    x[j] += t[j] + blk.out.1[j];
                }
            }
            if let (Some(a), Some(st)) = (&blk.attention, self.attn[i].as_mut()) {
                attend::<FMA>(
                    a,
                    st,
                    g,
                    d,
                    n,
                    pos,
                    &mut self.x,
                    &mut self.q,
                    &mut self.y,
                    &mut self.tmp,
                    &mut self.scores,
                );
            }
        }
        for (t, x) in self.tmp[..g * d].iter_mut().zip(&self.x) {
            *t = x.max(0.0);
        }
        let (pw_, pb) = &wt.head.proj;
        for gi in 0..g {
            self.trunk[gi * d..][..d].copy_from_slice(pb);
        }
        gemm(g, d, d, &self.tmp, d, pw_, &mut self.trunk, d, 1.0);
    }

    /// Logits `(G, L)` of channel `ch` at the position of the last [`Self::features`] call, given each
    /// image's earlier channels (`values[i][0..ch]`).
    pub fn channel_logits(&mut self, ch: usize, values: &[[i64; 3]]) -> &[f32] {
        let wt = self.w;
        let (d, l, g) = (wt.d, wt.levels, self.g);
        let hd = &wt.head;
        let emb = |v: i64| -> usize { (v.clamp(0, l as i64 - 1) as usize) * d };
        for gi in 0..g {
            let t = &self.trunk[gi * d..][..d];
            let h = &mut self.hin[gi * d..][..d];
            match ch {
                0 => h.copy_from_slice(t),
                1 => {
                    let e = &hd.r_to_g[emb(values[gi][0])..][..d];
                    for j in 0..d {
                        h[j] = t[j] + e[j];
                    }
                }
                _ => {
                    let e1 = &hd.r_to_b[emb(values[gi][0])..][..d];
                    let e2 = &hd.g_to_b[emb(values[gi][1])..][..d];
                    for j in 0..d {
                        h[j] = t[j] + e1[j] + e2[j];
                    }
                }
            }
            for v in h.iter_mut() {
                *v = v.max(0.0);
            }
        }
        let (ow, ob) = &hd.out[ch.min(2)];
        for gi in 0..g {
            self.logits[gi * l..][..l].copy_from_slice(ob);
        }
        gemm(g, d, l, &self.hin, d, ow, &mut self.logits, l, 1.0);
        if let (Some(cw), Some(rows)) = (&hd.copy, self.copy.as_ref()) {
            let (gates, width) = (cw.gates, cw.width);
            for gi in 0..g {
                add_copy_bonus(
                    &mut self.logits[gi * l..][..l],
                    (&self.copy_gates[gi * gates..][..gates], &cw.agree),
                    &rows.current()[gi * width..][..width],
                    (ch, cw.blend_slopes),
                    &values[gi],
                );
            }
        }
        &self.logits
    }

    /// Records the pixels at `pos` (one `[R, G, B]` of integer levels per image) for later positions.
    pub fn commit(&mut self, pos: usize, values: &[[i64; 3]]) {
        if let Some(rows) = self.copy.as_mut() {
            rows.commit(pos, values);
        }
        let wt = self.w;
        let (d, p, wd, g) = (wt.d, wt.p, wt.w, self.g);
        let n = wt.h * wd;
        let (r, c) = (pos / wd, pos % wd);
        let scale = 2.0 / (wt.levels as f64 - 1.0).max(1.0);
        let scale = scale as f32;
        let (img, row) = self.pix_stride();
        for (gi, v) in values.iter().enumerate().take(g) {
            let at = gi * img + (r + p) * row + (c + p) * 3;
            for ch in 0..3 {
                self.pix[at + ch] = v[ch] as f32 * scale - 1.0;
            }
        }
        for (blk, st) in wt.blocks.iter().zip(self.attn.iter_mut()) {
            let (Some(a), Some(st)) = (&blk.attention, st.as_mut()) else {
                continue;
            };
            // Keys and values see the pixel itself: features + pixel projection, then the kv projection.
            for gi in 0..g {
                let f = &st.feats[(gi * n + pos) * d..][..d];
                let px = &self.pix[gi * img + (r + p) * row + (c + p) * 3..][..3];
                let o = &mut self.q[gi * d..][..d];
                for j in 0..d {
                    o[j] = f[j]
                        + a.pixel.1[j]
                        + px[0] * a.pixel.0[j]
                        + px[1] * a.pixel.0[d + j]
                        + px[2] * a.pixel.0[2 * d + j];
                }
            }
            let kv = &mut self.tmp[..g * 2 * d];
            for gi in 0..g {
                kv[gi * 2 * d..][..2 * d].copy_from_slice(&a.kv.1);
            }
            gemm(g, d, 2 * d, &self.q, d, &a.kv.0, kv, 2 * d, 1.0);
            for gi in 0..g {
                let kvg = &kv[gi * 2 * d..][..2 * d];
                let keys = &mut st.keys[gi * d * (n + 1)..][..d * (n + 1)];
                for j in 0..d {
                    keys[j * (n + 1) + pos + 1] = kvg[j];
                }
                st.values[(gi * (n + 1) + pos + 1) * d..][..d].copy_from_slice(&kvg[d..]);
            }
        }
    }
}

/// One attention layer at `pos` for the group: `x += out(attention(x))`, caching the features.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend<const FMA: bool>(
    a: &AttnWeights,
    st: &mut AttnState,
    g: usize,
    d: usize,
    n: usize,
    pos: usize,
    x: &mut [f32],
    q: &mut [f32],
    y: &mut [f32],
    tmp: &mut [f32],
    scores: &mut [f32],
) {
    let pe = &a.pos[pos * d..][..d];
    for gi in 0..g {
        let xg = &x[gi * d..][..d];
        let f = &mut st.feats[(gi * n + pos) * d..][..d];
        let mut mean = 0f32;
        for j in 0..d {
            f[j] = xg[j] + pe[j];
            mean += f[j];
        }
        mean /= d as f32;
        let mut var = 0f32;
        for v in f.iter() {
            var += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (var / d as f32 + LAYER_NORM_EPS).sqrt();
        for j in 0..d {
            f[j] = (f[j] - mean) * inv * a.ln_w[j] + a.ln_b[j];
        }
        q[gi * d..][..d].copy_from_slice(&a.q.1);
    }
    gemm(g, d, d, &st.feats[pos * d..], n * d, &a.q.0, q, d, 1.0);
    let heads = a.heads;
    let dh = d / heads;
    let m = pos + 1;
    let scale = 1.0 / (dh as f32).sqrt();
    for gi in 0..g {
        let qg = &q[gi * d..][..d];
        let keys = &st.keys[gi * d * (n + 1)..][..d * (n + 1)];
        let values = &st.values[gi * (n + 1) * d..][..(n + 1) * d];
        let yg = &mut y[gi * d..][..d];
        yg.fill(0.0);
        for hh in 0..heads {
            let s = &mut scores[..m];
            s.fill(0.0);
            for e in 0..dh {
                let qv = qg[hh * dh + e] * scale;
                let kr = &keys[(hh * dh + e) * (n + 1)..][..m];
                for (sj, kj) in s.iter_mut().zip(kr) {
                    *sj = madd::<FMA>(qv, *kj, *sj);
                }
            }
            // Softmax and the weighted sum of values. Float reductions do not vectorise by themselves, so
            // they run in eight independent lanes.
            let mx = lanes_max(s);
            for sj in s.iter_mut() {
                *sj = exp(*sj - mx);
            }
            let inv = 1.0 / lanes_sum(s);
            let yh = &mut yg[hh * dh..][..dh];
            let mut e0 = 0;
            while e0 + LANES <= dh {
                // Four accumulators so that consecutive multiply-adds do not wait on each other.
                let mut acc = [[0f32; LANES]; 4];
                let off = hh * dh + e0;
                let quads = s.chunks_exact(4);
                let rest = quads.remainder();
                for (j4, s4) in quads.enumerate() {
                    for u in 0..4 {
                        let vr = &values[(4 * j4 + u) * d + off..][..LANES];
                        for l in 0..LANES {
                            acc[u][l] = madd::<FMA>(s4[u], vr[l], acc[u][l]);
                        }
                    }
                }
                for (u, sj) in rest.iter().enumerate() {
                    let vr = &values[(m - rest.len() + u) * d + off..][..LANES];
                    for l in 0..LANES {
                        acc[u][l] = madd::<FMA>(*sj, vr[l], acc[u][l]);
                    }
                }
                for l in 0..LANES {
                    yh[e0 + l] = (acc[0][l] + acc[1][l] + acc[2][l] + acc[3][l]) * inv;
                }
                e0 += LANES;
            }
            for e in e0..dh {
                let mut acc = 0f32;
                for (j, sj) in s.iter().enumerate() {
                    acc = madd::<FMA>(*sj, values[j * d + hh * dh + e], acc);
                }
                yh[e] = acc * inv;
            }
        }
    }
    let out = &mut tmp[..g * d];
    for gi in 0..g {
        out[gi * d..][..d].copy_from_slice(&a.out.1);
    }
    gemm(g, d, d, y, d, &a.out.0, out, d, 1.0);
    for (xv, o) in x[..g * d].iter_mut().zip(out.iter()) {
        *xv += o;
    }
}

impl super::SliceDecoding for CpuSliceDecoder<'_> {
    fn features(&mut self, pos: usize) -> Result<()> {
        CpuSliceDecoder::features(self, pos);
        Ok(())
    }

    fn channel_logits(&mut self, ch: usize, chosen: &[[i64; 3]]) -> Result<&[f32]> {
        Ok(CpuSliceDecoder::channel_logits(self, ch, chosen))
    }

    fn commit(&mut self, pos: usize, values: &[[i64; 3]]) -> Result<()> {
        CpuSliceDecoder::commit(self, pos, values);
        Ok(())
    }
}
