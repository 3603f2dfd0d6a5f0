//! The slice embedder (docs/design.md section 3) and the decoder's context projection as plain convolutions on
//! the host (im2col and `matrixmultiply`), for the CPU engine: the embedder's 3x3 convolutions were the last
//! libtorch kernels a CPU slice ran before its step loop, and a libspn without libtorch needs them in plain Rust
//! (issue 18). Tests hold its output to the libtorch embedder's within 1e-4.
use super::cpu::gemm;
use crate::config::StageSpec;
use crate::error::{Error, Result};
use crate::weights::{HostTensor, Weights};

/// A convolution with "same" padding over channel-last input, as a `(taps * cin, cout)` matrix: only the
/// kernel taps a mask lets through are kept (a masked convolution's hidden taps are zero, and skipping them
/// saves almost half of a 3x3 causal convolution's work).
pub(crate) struct HostConv {
    cin: usize,
    cout: usize,
    /// Kernel offsets `(dy, dx)` from the output position, in the weight matrix's row order.
    taps: Vec<(isize, isize)>,
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
            |_, _| true,
        ))
    }

    /// From a `(cout, cin, kh, kw)` weight and a bias, keeping the taps `(ky, kx)` that `visible` accepts.
    pub(crate) fn from_parts(
        ws: &HostTensor,
        b: Vec<f32>,
        visible: impl Fn(usize, usize) -> bool,
    ) -> Self {
        let [cout, cin, kh, kw] = [ws.shape[0], ws.shape[1], ws.shape[2], ws.shape[3]];
        // (cout, cin, kh, kw) -> (kh, kw, cin, cout): rows (ky * kw + kx) * cin + ci, column co.
        let all = ws.permute(&[2, 3, 1, 0]).data;
        let (mut taps, mut w) = (Vec::new(), Vec::new());
        for ky in 0..kh {
            for kx in (0..kw).filter(|&kx| visible(ky, kx)) {
                taps.push((
                    ky as isize - (kh / 2) as isize,
                    kx as isize - (kw / 2) as isize,
                ));
                w.extend_from_slice(&all[(ky * kw + kx) * cin * cout..][..cin * cout]);
            }
        }
        Self {
            cin,
            cout,
            taps,
            w,
            b,
        }
    }

    /// `x`: images `(h * w, cin)` channel-last, one after the other -> `(h * w, cout)` each.
    pub(crate) fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let k = self.taps.len() * self.cin;
        let imgs = x.len() / (h * w * self.cin).max(1);
        let rows = imgs * h * w;
        let mut out: Vec<f32> = (0..rows).flat_map(|_| self.b.iter().copied()).collect();
        if self.taps.is_empty() {
            // A 1x1 causal convolution that may not see its own position sees nothing.
            return out;
        }
        if self.taps == [(0, 0)] {
            gemm(rows, k, self.cout, x, k, &self.w, &mut out, self.cout, 1.0);
            return out;
        }
        let mut cols = vec![0.0f32; rows * k];
        for (x, cols) in x
            .chunks_exact(h * w * self.cin)
            .zip(cols.chunks_exact_mut(h * w * k))
        {
            self.im2col(x, cols, h, w);
        }
        gemm(
            rows, k, self.cout, &cols, k, &self.w, &mut out, self.cout, 1.0,
        );
        out
    }

    /// One image's patches: row `y * w + x` holds the input at each tap around `(y, x)`, zero outside the
    /// image.
    fn im2col(&self, x: &[f32], cols: &mut [f32], h: usize, w: usize) {
        let (k, cin) = (self.taps.len() * self.cin, self.cin);
        for y in 0..h {
            for xx in 0..w {
                let row = &mut cols[(y * w + xx) * k..(y * w + xx + 1) * k];
                for (t, &(dy, dx)) in self.taps.iter().enumerate() {
                    let (sy, sx) = (y as isize + dy, xx as isize + dx);
                    if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                        continue;
                    }
                    let src = (sy as usize * w + sx as usize) * cin;
                    row[t * cin..(t + 1) * cin].copy_from_slice(&x[src..src + cin]);
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
