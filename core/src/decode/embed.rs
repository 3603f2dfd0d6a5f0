//! The slice embedder (docs/design.md section 3) and the decoder's context projection as plain convolutions on
//! the host (im2col and `matrixmultiply`), for the CPU engine: the embedder's 3x3 convolutions were the last
//! libtorch kernels a CPU slice ran before its step loop, and a libspn without libtorch needs them in plain Rust
//! (issue 18). Tests hold its output to the libtorch embedder's within 1e-4.
use super::cpu::gemm;
use crate::config::StageSpec;
use crate::error::{Error, Result};
use crate::weights::{HostTensor, Weights};

/// A convolution with "same" padding, as a `(kh * kw * cin, cout)` matrix over channel-last input.
pub(crate) struct HostConv {
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl HostConv {
    /// The convolution `name` (`name.weight` `(cout, cin, k, k)`, `name.bias`).
    fn new(w: &Weights, name: &str, cin: usize, cout: usize, k: usize) -> Result<Self> {
        let ws = w.get(&format!("{name}.weight"), &[cout, cin, k, k])?;
        Ok(Self::from_parts(
            ws,
            w.get(&format!("{name}.bias"), &[cout])?.data.clone(),
        ))
    }

    /// From a `(cout, cin, kh, kw)` weight (masked or not) and a bias.
    pub(crate) fn from_parts(ws: &HostTensor, b: Vec<f32>) -> Self {
        let [cout, cin, kh, kw] = [ws.shape[0], ws.shape[1], ws.shape[2], ws.shape[3]];
        // (cout, cin, kh, kw) -> (kh, kw, cin, cout): row (ky * kw + kx) * cin + ci, column co.
        let w = ws.permute(&[2, 3, 1, 0]).data;
        Self {
            cin,
            cout,
            kh,
            kw,
            w,
            b,
        }
    }

    /// `x`: images `(h * w, cin)` channel-last, one after the other -> `(h * w, cout)` each. The images go
    /// through one matrix product, so the weights are packed once for all of them.
    pub(crate) fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (ph, pw) = (self.kh / 2, self.kw / 2);
        let k = self.kh * self.kw * self.cin;
        let imgs = x.len() / (h * w * self.cin).max(1);
        let rows = imgs * h * w;
        let mut out: Vec<f32> = (0..rows).flat_map(|_| self.b.iter().copied()).collect();
        if self.kh == 1 && self.kw == 1 {
            gemm(rows, k, self.cout, x, k, &self.w, &mut out, self.cout, 1.0);
            return out;
        }
        let mut cols = vec![0.0f32; rows * k];
        for (x, cols) in x
            .chunks_exact(h * w * self.cin)
            .zip(cols.chunks_exact_mut(h * w * k))
        {
            self.im2col(x, cols, h, w, (ph, pw));
        }
        gemm(
            rows, k, self.cout, &cols, k, &self.w, &mut out, self.cout, 1.0,
        );
        out
    }

    /// One image's patches: row `y * w + x` holds the input around `(y, x)`, zero outside the image.
    fn im2col(&self, x: &[f32], cols: &mut [f32], h: usize, w: usize, (ph, pw): (usize, usize)) {
        let k = self.kh * self.kw * self.cin;
        for y in 0..h {
            for xx in 0..w {
                let row = &mut cols[(y * w + xx) * k..(y * w + xx + 1) * k];
                for ky in 0..self.kh {
                    let sy = y as isize + ky as isize - ph as isize;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    for kx in 0..self.kw {
                        let sx = xx as isize + kx as isize - pw as isize;
                        if sx < 0 || sx >= w as isize {
                            continue;
                        }
                        let src = (sy as usize * w + sx as usize) * self.cin;
                        let dst = (ky * self.kw + kx) * self.cin;
                        row[dst..dst + self.cin].copy_from_slice(&x[src..src + self.cin]);
                    }
                }
            }
        }
    }
}

fn relu(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| x.max(0.0)).collect()
}

/// One stage's slice embedder and context projection on the host.
pub struct HostEmbedder {
    input: HostConv,
    blocks: Vec<(HostConv, HostConv)>,
    /// `(slices, D)`: the learned embedding of the target slice index.
    meta: Vec<f32>,
    context: HostConv,
    d: usize,
}

impl HostEmbedder {
    /// The stage `spec`'s embedder and the decoder's context projection from its weights `w` (names under the
    /// stage).
    pub fn new(spec: &StageSpec, w: &Weights) -> Result<Self> {
        let net = &spec.net;
        let d = net.channels as usize;
        let conv = |name: &str, cin| HostConv::new(w, name, cin, d, 3);
        Ok(Self {
            input: conv("embedder.input", spec.cond_channels() as usize)?,
            blocks: (0..net.embed_blocks)
                .map(|i| {
                    let b = format!("embedder.blocks.{i}");
                    Ok((
                        conv(&format!("{b}.conv1"), d)?,
                        conv(&format!("{b}.conv2"), d)?,
                    ))
                })
                .collect::<Result<_>>()?,
            meta: w
                .get("embedder.meta.weight", &[spec.slices() as usize, d])?
                .data
                .clone(),
            context: HostConv::new(
                w,
                "decoder.context",
                d,
                2 * d * (net.decoder_blocks.max(1) as usize),
                1,
            )?,
            d,
        })
    }

    /// Width of the context (D).
    pub fn d(&self) -> usize {
        self.d
    }

    /// Input channels of the embedder.
    pub fn cin(&self) -> usize {
        self.input.cin
    }

    /// Width of the context projection.
    pub fn proj_width(&self) -> usize {
        self.context.cout
    }

    /// The context `(h * w, D)` and its projection `(h * w, proj_width)` of images, channel-last, one after the
    /// other, from their embedder inputs `cond` `(h * w, cin)` each, channel-last, and their target slices
    /// `ks`: the same arithmetic as `SliceEmbedder::forward_t` (not training) and the decoder's context
    /// convolution.
    pub fn forward(
        &self,
        cond: &[f32],
        ks: &[usize],
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let d = self.d;
        let mut x = self.input.forward(cond, h, w);
        for (img, &k) in x.chunks_mut(h * w * d).zip(ks) {
            let meta = self
                .meta
                .get(k * d..(k + 1) * d)
                .ok_or_else(|| Error::Other(format!("slice {k} has no meta embedding")))?;
            for px in img.chunks_mut(d) {
                for (v, m) in px.iter_mut().zip(meta) {
                    *v += m;
                }
            }
        }
        for (c1, c2) in &self.blocks {
            let hdn = relu(&c1.forward(&relu(&x), h, w));
            let y = c2.forward(&hdn, h, w);
            for (a, b) in x.iter_mut().zip(y) {
                *a += b;
            }
        }
        let proj = self.context.forward(&x, h, w);
        Ok((x, proj))
    }
}
