//! Classic interpolation filters aligned to slice 0: output pixel `i` samples the input at `i / S`, so input
//! pixel `j` lands on output `S * j`, where size upscaling puts it (docs/design.md section 1). They scale alpha
//! beside the networks (`alpha`) and are the baselines the model's size upscaling is measured against
//! (`bench::upscale`): an image filter centred on pixel middles instead would be shifted by (S - 1) / 2 pixels
//! from the model's output and lose PSNR for that alone.

/// An interpolation kernel; both reproduce their samples exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Keys' cubic convolution with a = -0.5: two taps each side.
    CatmullRom,
    /// Lanczos with three lobes: three taps each side.
    Lanczos3,
}

impl Kernel {
    fn radius(self) -> i64 {
        match self {
            Kernel::CatmullRom => 2,
            Kernel::Lanczos3 => 3,
        }
    }

    fn weight(self, t: f32) -> f32 {
        let t = t.abs();
        match self {
            Kernel::CatmullRom if t < 1.0 => 1.5 * t * t * t - 2.5 * t * t + 1.0,
            Kernel::CatmullRom if t < 2.0 => -0.5 * t * t * t + 2.5 * t * t - 4.0 * t + 2.0,
            Kernel::Lanczos3 if t == 0.0 => 1.0,
            Kernel::Lanczos3 if t < 3.0 => {
                let x = std::f32::consts::PI * t;
                3.0 * x.sin() * (x / 3.0).sin() / (x * x)
            }
            _ => 0.0,
        }
    }
}

/// One row or column of `n` values resampled to `n * s` (edges clamped), weights normalised.
fn line(src: impl Fn(usize) -> f32, n: usize, s: usize, k: Kernel) -> Vec<f32> {
    let r = k.radius();
    (0..n * s)
        .map(|i| {
            let (j, f) = (i / s, (i % s) as f32 / s as f32);
            let (mut sum, mut norm) = (0.0, 0.0);
            for d in (1 - r)..=r {
                let w = k.weight(d as f32 - f);
                let at = (j as i64 + d).clamp(0, n as i64 - 1) as usize;
                sum += src(at) * w;
                norm += w;
            }
            sum / norm
        })
        .collect()
}

/// `pixels` (row-major, `size` = (width, height, channels), 8 bits) scaled `s` times, separably, aligned to
/// slice 0; rounded and clamped.
pub fn upscale_aligned(pixels: &[u8], size: (usize, usize, usize), s: usize, k: Kernel) -> Vec<u8> {
    let (w, h, c) = size;
    let (ow, oh) = (w * s, h * s);
    let mut out = vec![0u8; ow * oh * c];
    for ch in 0..c {
        let rows: Vec<Vec<f32>> = (0..h)
            .map(|y| line(|x| pixels[(y * w + x) * c + ch] as f32, w, s, k))
            .collect();
        for x in 0..ow {
            for (y, v) in line(|y| rows[y][x], h, s, k).into_iter().enumerate() {
                out[(y * ow + x) * c + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kernels_keep_their_samples_and_flat_images() {
        let px: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 37 % 256) as u8).collect();
        for k in [Kernel::CatmullRom, Kernel::Lanczos3] {
            let up = upscale_aligned(&px, (5, 4, 3), 4, k);
            for y in 0..4 {
                for x in 0..5 {
                    for c in 0..3 {
                        assert_eq!(
                            up[((4 * y) * 20 + 4 * x) * 3 + c],
                            px[(y * 5 + x) * 3 + c],
                            "{k:?}"
                        );
                    }
                }
            }
            let flat = upscale_aligned(&[90; 3 * 3], (3, 3, 1), 4, k);
            assert!(flat.iter().all(|&v| v == 90), "{k:?}");
        }
    }
}
