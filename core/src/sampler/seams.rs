//! Seams between windows on a canvas, measured (docs/design.md section 8): the mean absolute difference
//! between neighbouring pixels drawn by different windows, against that between neighbours drawn by the same
//! window. Both `spn bench --canvas` and the seam tests use it.
use image::RgbImage;

/// A pixel no window drew: known from the start.
pub const KNOWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Seams {
    /// Mean absolute difference (over R, G, B, 0..=255) of neighbours drawn by different windows...
    pub across: f64,
    /// ... and of neighbours drawn by the same window.
    pub inside: f64,
    /// Across over inside, each pair of neighbours compared with inside pairs of its own kind (direction and
    /// position in the S x S subscale cell: size upscaling draws some cell positions systematically unlike
    /// others, and a border always falls on the same ones). 1 means no seam.
    pub ratio: f64,
    pub pairs_across: usize,
}

/// Seams of `img`, whose pixel `p` was drawn by window `owners[p]` (or [`KNOWN`]); `s` is the model's scale.
/// None when no neighbours lie across a border.
pub fn measure(img: &RgbImage, owners: &[u32], s: usize) -> Option<Seams> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    let diff = |a: [u8; 3], b: [u8; 3]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&u, v)| (u as f64 - v as f64).abs())
            .sum::<f64>()
            / 3.0
    };
    // Pairs by kind: (direction, x mod s, y mod s) of the first pixel.
    let kinds = 2 * s * s;
    let kind = |dir: usize, x: usize, y: usize| (dir * s + y % s) * s + x % s;
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
                let k = kind(dir, x, y);
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
        ratio: if i > 0.0 { a / i } else { f64::INFINITY },
        pairs_across: paired.len(),
    })
}
