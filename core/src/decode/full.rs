//! The decoder's full pass on the host: the log-probability of a slice whose every sub-pixel is known, in one
//! pass over all positions (as `SpnNet::logits` computes it with libtorch), for the CPU engine without
//! libtorch (issue 18). The sampler scores such slices instead of decoding them (upscaling keeps slice 0 and,
//! in depth, every MSB), so this pass is what keeps those jobs as fast as with libtorch.
//!
//! Masked convolutions are convolutions over the taps their mask lets through (docs/design.md section 3); the
//! attention is the causal self-attention with its sink, each position seeing the positions before it.
// Index loops over several equal-length rows at once read more plainly here than zipped iterators.
#![allow(clippy::needless_range_loop)]
use super::cpu::{gemm, sigmoid, tanh, AttnWeights, CpuStepWeights, LAYER_NORM_EPS};
use super::embed::HostConv;
use super::neighbours::add_copy_bonus;
use crate::config::StageSpec;
use crate::error::Result;
use crate::weights::Weights;

/// The masked convolutions of one stage's decoder, whole kernels with the hidden taps zeroed; the other
/// weights are the step engine's.
pub struct FullPass {
    input: HostConv,
    blocks: Vec<HostConv>,
}

/// Whether a position sees tap `(r, q)` of a `k x k` causal kernel: rows above, and on its own row the
/// columns left of it (and itself when `centre`), as `model::layers::MaskedConv2d` masks them.
fn visible(k: usize, centre: bool) -> impl Fn(usize, usize) -> bool {
    let c = k / 2;
    move |r, q| r < c || (r == c && (q < c || (q == c && centre)))
}

impl FullPass {
    pub fn new(spec: &StageSpec, w: &Weights) -> Result<Self> {
        let net = &spec.net;
        let (d, k) = (net.channels as usize, net.first_kernel as usize);
        let conv = |name: &str, cin, cout, k, centre| -> Result<HostConv> {
            let ws = w.get(&format!("{name}.weight"), &[cout, cin, k, k])?;
            let b = w.get(&format!("{name}.bias"), &[cout])?.data.clone();
            Ok(HostConv::from_parts(ws, b, visible(k, centre)))
        };
        Ok(Self {
            input: conv("decoder.input", 3, d, k, false)?,
            blocks: (0..net.decoder_blocks as usize)
                .map(|i| conv(&format!("decoder.blocks.{i}.conv"), d, 2 * d, 3, true))
                .collect::<Result<_>>()?,
        })
    }

    /// Natural log-probability of every sub-pixel `(h * w, 3)` of one image's known slice `values` (integer
    /// levels) given its context `(h * w, D)` and context projection, channel-last (`HostEmbedder::forward`),
    /// and its copy map `(h * w, E, 3)` (`neighbours::copy_map`; empty without the copy path).
    pub fn log_probs(
        &self,
        st: &CpuStepWeights,
        ctx: &[f32],
        proj: &[f32],
        values: &[[i64; 3]],
        copy: &[i32],
    ) -> Vec<f32> {
        let l = st.levels;
        let logits = self.logits(st, ctx, proj, values, copy);
        let level = |v: i64| v.clamp(0, l as i64 - 1) as usize;
        logits
            .chunks_exact(l)
            .enumerate()
            .map(|(i, lg)| {
                let mx = lg.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let lse = mx + lg.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
                (lg[level(values[i / 3][i % 3])] as f64 - lse) as f32
            })
            .collect()
    }

    /// Teacher-forced logits `(h * w, 3, L)` of one image's slice (`SpnNet::logits`, channel-last); `copy`
    /// as for [`Self::log_probs`].
    pub fn logits(
        &self,
        st: &CpuStepWeights,
        ctx: &[f32],
        proj: &[f32],
        values: &[[i64; 3]],
        copy: &[i32],
    ) -> Vec<f32> {
        let (d, h, w, l) = (st.d, st.h, st.w, st.levels);
        let n = h * w;
        let scale = (2.0 / (l as f64 - 1.0).max(1.0)) as f32;
        let pix: Vec<f32> = values
            .iter()
            .flat_map(|v| v.map(|c| c as f32 * scale - 1.0))
            .collect();
        let mut x = self.input.forward(&pix, h, w);
        for (a, c) in x.iter_mut().zip(ctx) {
            *a += c;
        }
        let pw = proj.len() / n;
        let mut gate = vec![0f32; n * d];
        for (i, (conv, blk)) in self.blocks.iter().zip(&st.blocks).enumerate() {
            let hcat = conv.forward(&x, h, w);
            for p in 0..n {
                let (hc, pj) = (
                    &hcat[p * 2 * d..][..2 * d],
                    &proj[p * pw + 2 * d * i..][..2 * d],
                );
                for j in 0..d {
                    gate[p * d + j] = tanh(hc[j] + pj[j]) * sigmoid(hc[d + j] + pj[d + j]);
                }
            }
            let mut y: Vec<f32> = (0..n).flat_map(|_| blk.out.1.iter().copied()).collect();
            gemm(n, d, d, &gate, d, &blk.out.0, &mut y, d, 1.0);
            for (a, b) in x.iter_mut().zip(&y) {
                *a += b;
            }
            if let Some(a) = &blk.attention {
                let y = attention(a, &x, &pix, n, d);
                for (a, b) in x.iter_mut().zip(&y) {
                    *a += b;
                }
            }
        }
        head_logits(st, &x, values, n, copy)
    }
}

/// `x W + b` for `n` rows: `W` `(cin, cout)` row-major.
fn linear(x: &[f32], (w, b): &(Vec<f32>, Vec<f32>), n: usize, cin: usize) -> Vec<f32> {
    let cout = b.len();
    let mut y: Vec<f32> = (0..n).flat_map(|_| b.iter().copied()).collect();
    gemm(n, cin, cout, x, cin, w, &mut y, cout, 1.0);
    y
}

/// The causal self-attention's output `(n, D)` over all positions (`CausalSelfAttention::forward`): position
/// `i` attends to the sink and the positions before it, whose keys and values also see their pixels.
fn attention(a: &AttnWeights, x: &[f32], pix: &[f32], n: usize, d: usize) -> Vec<f32> {
    let mut f = vec![0f32; n * d];
    for p in 0..n {
        let fp = &mut f[p * d..][..d];
        for j in 0..d {
            fp[j] = x[p * d + j] + a.pos[p * d + j];
        }
        let mean = fp.iter().sum::<f32>() / d as f32;
        let var = fp.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
        for j in 0..d {
            fp[j] = (fp[j] - mean) * inv * a.ln_w[j] + a.ln_b[j];
        }
    }
    let q = linear(&f, &a.q, n, d);
    let mut fk = linear(pix, &a.pixel, n, 3);
    for (v, g) in fk.iter_mut().zip(&f) {
        *v += g;
    }
    let kv = linear(&fk, &a.kv, n, d);
    let (heads, dh) = (a.heads, d / a.heads);
    let scale = 1.0 / (dh as f32).sqrt();
    // Per head, as matrix products: scores `(n, n + 1)` = Q K^T over the sink (entry 0) and every position
    // (entry j + 1), position i keeping entries 0..=i; then Y = softmax(scores) V.
    let mut kt = vec![0f32; dh * (n + 1)];
    let mut v = vec![0f32; (n + 1) * dh];
    let mut scores = vec![0f32; n * (n + 1)];
    let mut y = vec![0f32; n * d];
    for hh in 0..heads {
        for e in 0..dh {
            kt[e * (n + 1)] = a.sink[hh * dh + e];
            for j in 0..n {
                kt[e * (n + 1) + j + 1] = kv[j * 2 * d + hh * dh + e];
            }
        }
        v[..dh].copy_from_slice(&a.sink[d + hh * dh..][..dh]);
        for j in 0..n {
            v[(j + 1) * dh..][..dh].copy_from_slice(&kv[j * 2 * d + d + hh * dh..][..dh]);
        }
        gemm(n, dh, n + 1, &q[hh * dh..], d, &kt, &mut scores, n + 1, 0.0);
        for (p, row) in scores.chunks_exact_mut(n + 1).enumerate() {
            let (seen, hidden) = row.split_at_mut(p + 1);
            let mx = seen
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
            let mut total = 0f32;
            for x in seen.iter_mut() {
                *x = (*x * scale - mx).exp();
                total += *x;
            }
            for x in seen.iter_mut() {
                *x /= total;
            }
            hidden.fill(0.0);
        }
        gemm(n, n + 1, dh, &scores, n + 1, &v, &mut y[hh * dh..], d, 0.0);
    }
    linear(&y, &a.out, n, d)
}

/// Logits `(n, 3, L)` of every channel under the channel head (`ChannelHead::forward`): R from the trunk, G
/// given R, B given R and G.
fn head_logits(
    st: &CpuStepWeights,
    trunk: &[f32],
    values: &[[i64; 3]],
    n: usize,
    copy: &[i32],
) -> Vec<f32> {
    let (d, l) = (st.d, st.levels);
    let hd = &st.head;
    let relu: Vec<f32> = trunk.iter().map(|v| v.max(0.0)).collect();
    let t = linear(&relu, &hd.proj, n, d);
    let (width, gates) = hd.copy.as_ref().map_or((0, 0), |cw| (cw.width, cw.gates));
    let copy_gates = match (&hd.copy, copy.len() == n * width) {
        (Some(cw), true) => {
            let mut z = vec![0f32; n * gates];
            cw.gates(&t, n, d, &mut z);
            Some((cw, z))
        }
        _ => None,
    };
    let level = |v: i64| v.clamp(0, l as i64 - 1) as usize;
    let mut out = vec![0f32; n * 3 * l];
    let mut hin = vec![0f32; n * d];
    for ch in 0..3 {
        for p in 0..n {
            let v = values[p];
            let (tp, hp) = (&t[p * d..][..d], &mut hin[p * d..][..d]);
            for j in 0..d {
                let e = match ch {
                    0 => 0.0,
                    1 => hd.r_to_g[level(v[0]) * d + j],
                    _ => hd.r_to_b[level(v[0]) * d + j] + hd.g_to_b[level(v[1]) * d + j],
                };
                hp[j] = (tp[j] + e).max(0.0);
            }
        }
        let logits = linear(&hin, &hd.out[ch], n, d);
        for (p, lg) in logits.chunks_exact(l).enumerate() {
            let row = &mut out[(p * 3 + ch) * l..][..l];
            row.copy_from_slice(lg);
            if let Some((cw, z)) = &copy_gates {
                let (z, c) = (&z[p * gates..][..gates], &copy[p * width..][..width]);
                add_copy_bonus(row, (z, &cw.agree), c, (ch, cw.blend_slopes), &values[p]);
            }
        }
    }
    out
}
