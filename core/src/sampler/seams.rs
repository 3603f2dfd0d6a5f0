//! Seams between windows on a canvas, measured (docs/design.md section 8): the mean absolute difference
//! between neighbouring pixels drawn by different windows, against that between neighbours drawn by the same
//! window. Both `spn bench --canvas` and the seam tests use it.
use super::CanvasJob;
use image::RgbImage;

/// A pixel no window drew: known from the start.
pub const KNOWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Seams {
    /// Mean absolute difference (over R, G, B, 0..=255) of neighbours drawn by different windows...
    pub across: f64,
    /// ... and of neighbours drawn by the same window.
    pub inside: f64,
    /// The mean inside difference of each across pair's kind, averaged over the across pairs: what `across`
    /// is compared with (pooling several canvases sums `across` and this, each times `pairs_across`).
    pub inside_matched: f64,
    /// Across over inside, each pair of neighbours compared with inside pairs of its own kind (direction,
    /// position in the S x S subscale cell: size upscaling draws some cell positions systematically unlike
    /// others, and a border always falls on the same ones; and, for depth upscaling, whether the kept top bits
    /// of the pair differ: see [`Kept`]). 1 means no seam.
    pub ratio: f64,
    pub pairs_across: usize,
}

/// The input of a depth upscaling and the top bits it keeps of every value. Where those bits differ between
/// two neighbours, the pair steps by at least one band of the input whoever drew it (a smooth gradient drawn
/// as flat bands steps by a whole band there): such a pair is compared only with inside pairs that step too,
/// so that a band edge that happens to fall on a window border is not counted as a seam.
#[derive(Clone, Copy, Debug)]
pub struct Kept<'a> {
    pub input: &'a RgbImage,
    pub bits: u32,
}

impl Kept<'_> {
    fn steps(&self, (x, y): (usize, usize), (nx, ny): (usize, usize)) -> bool {
        let shift = 8 - self.bits.min(8);
        let top = |x: usize, y: usize| {
            self.input
                .get_pixel(x as u32, y as u32)
                .0
                .map(|v| v.checked_shr(shift).unwrap_or(0))
        };
        top(x, y) != top(nx, ny)
    }
}

/// [`measure`] of a canvas job's result `img` on a model with `scale` S and `msb_bits` kept by its low-depth
/// stages: a depth upscaling's input, as the model sees it (over white), fixes the kept top bits.
pub fn measure_job(
    img: &RgbImage,
    owners: &[u32],
    job: &CanvasJob,
    scale: usize,
    msb_bits: Option<u32>,
) -> Option<Seams> {
    let input = match job {
        CanvasJob::UpscaleDepth { image } => Some(crate::data::composite_on_white(image)),
        _ => None,
    };
    let kept = input
        .as_ref()
        .zip(msb_bits)
        .map(|(input, bits)| Kept { input, bits });
    measure(img, owners, scale, kept)
}

/// Seams of `img`, whose pixel `p` was drawn by window `owners[p]` (or [`KNOWN`]); `s` is the model's scale;
/// `kept`, for depth upscaling, what the input fixed (ignored unless the input has `img`'s size). None when no
/// neighbours lie across a border.
pub fn measure(img: &RgbImage, owners: &[u32], s: usize, kept: Option<Kept>) -> Option<Seams> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let kept = kept.filter(|k| k.input.dimensions() == img.dimensions());
    let px = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    let diff = |a: [u8; 3], b: [u8; 3]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&u, v)| (u as f64 - v as f64).abs())
            .sum::<f64>()
            / 3.0
    };
    // Pairs by kind: (top bits step, direction, x mod s, y mod s) of the first pixel.
    let kinds = 4 * s * s;
    let kind = |step: bool, dir: usize, x: usize, y: usize| {
        ((usize::from(step) * 2 + dir) * s + y % s) * s + x % s
    };
    let (mut in_sum, mut in_n) = (vec![0.0; kinds], vec![0usize; kinds]);
    let mut across = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let o = owners[y * w + x];
            for (dir, (nx, ny)) in [(0, (x + 1, y)), (1, (x, y + 1))] {
                if nx >= w || ny >= h {
                    continue;
                }
                let on = owners[ny * w + nx];
                if o == KNOWN || on == KNOWN {
                    continue;
                }
                let d = diff(px(x, y), px(nx, ny));
                let step = kept.is_some_and(|k| k.steps((x, y), (nx, ny)));
                let k = kind(step, dir, x, y);
                if o == on {
                    in_sum[k] += d;
                    in_n[k] += 1;
                } else {
                    across.push((k, d));
                }
            }
        }
    }
    let mean = |k: usize| (in_n[k] > 0).then(|| in_sum[k] / in_n[k] as f64);
    let paired: Vec<(f64, f64)> = across
        .iter()
        .filter_map(|&(k, d)| mean(k).map(|m| (d, m)))
        .collect();
    if paired.is_empty() {
        return None;
    }
    let n = paired.len() as f64;
    let (a, i) = paired
        .iter()
        .fold((0.0, 0.0), |(a, i), &(d, m)| (a + d, i + m));
    let inside_all = in_sum.iter().sum::<f64>() / in_n.iter().sum::<usize>().max(1) as f64;
    Some(Seams {
        across: a / n,
        inside: inside_all,
        inside_matched: i / n,
        ratio: match (a > 0.0, i > 0.0) {
            (_, true) => a / i,
            // Nothing differs anywhere: no seam.
            (false, false) => 1.0,
            (true, false) => f64::INFINITY,
        },
        pairs_across: paired.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16x8 canvas drawn by two windows meeting at x = 8, in flat vertical bands of `band(x)`, with a
    /// faint texture inside so that inside pairs are not all equal.
    fn two_windows(band: impl Fn(usize) -> u8) -> (RgbImage, Vec<u32>) {
        let img = RgbImage::from_fn(16, 8, |x, y| {
            let v = band(x as usize) + ((x + y) % 2) as u8;
            image::Rgb([v, v, v])
        });
        let owners = (0..16 * 8).map(|p| u32::from(p % 16 >= 8)).collect();
        (img, owners)
    }

    #[test]
    fn a_band_edge_of_the_input_on_a_border_is_not_a_seam_but_a_jump_inside_a_band_is() {
        // The input steps from one 3-bit band to the next at the border; the result draws each band flat.
        let input = RgbImage::from_fn(16, 8, |x, _| image::Rgb([if x < 8 { 60 } else { 70 }; 3]));
        let kept = Kept {
            input: &input,
            bits: 3,
        };
        let (img, owners) = two_windows(|x| if x < 8 { 48 } else { 80 });
        let blind = measure(&img, &owners, 1, None).unwrap();
        assert!(blind.ratio > 10.0, "{blind:?}");
        // The band edge at a border inside a window would step as much: there is none here, so the across
        // pairs that step have no inside pairs to compare with and are not counted.
        assert!(measure(&img, &owners, 1, Some(kept)).is_none());
        // The same band (the input is flat), drawn 32 levels apart by the two windows: a seam either way.
        let flat = RgbImage::from_pixel(16, 8, image::Rgb([60; 3]));
        let kept = Kept {
            input: &flat,
            bits: 3,
        };
        let seam = measure(&img, &owners, 1, Some(kept)).unwrap();
        assert!(seam.ratio > 10.0, "{seam:?}");
    }

    #[test]
    fn pairs_that_step_are_compared_with_inside_pairs_that_step() {
        // Bands 4 pixels wide, one edge on the border and three inside the windows, all drawn alike.
        let band = |x: usize| 32 * (x / 4) as u8;
        let input = RgbImage::from_fn(16, 8, |x, _| image::Rgb([band(x as usize) + 5; 3]));
        let (img, owners) = two_windows(band);
        let m = measure(
            &img,
            &owners,
            1,
            Some(Kept {
                input: &input,
                bits: 3,
            }),
        )
        .unwrap();
        assert!((m.ratio - 1.0).abs() < 0.05, "{m:?}");
        assert!((m.across - m.inside_matched).abs() < 1.0, "{m:?}");
    }

    #[test]
    fn a_canvas_where_nothing_differs_has_no_seam() {
        let img = RgbImage::from_pixel(16, 8, image::Rgb([9; 3]));
        let owners: Vec<u32> = (0..16 * 8).map(|p| u32::from(p % 16 >= 8)).collect();
        assert_eq!(measure(&img, &owners, 1, None).unwrap().ratio, 1.0);
    }
}
