//! Transparency, carried beside the networks (docs/design.md section 8): the networks see colour composited
//! over white ([`crate::data::composite_on_white`], as in training); alpha is kept exactly where pixels are
//! known, scaled with a standard filter for size upscaling, and opaque where the model draws.
use image::{GrayImage, Luma};

/// The straight colour that, composited over white with alpha `a`, gives `c` (the inverse of
/// `composite_on_white`, rounded and clamped); `None` for a transparent pixel, whose colour is not seen.
pub fn uncomposite(c: u8, a: u8) -> Option<u8> {
    match a {
        0 => None,
        255 => Some(c),
        a => {
            let (c, a) = (c as i32, a as i32);
            // c = (v * a + 255 * (255 - a)) / 255, so v = 255 * (c - 255 + a) / a.
            let v = (255 * (c - 255 + a) + a / 2).div_euclid(a);
            Some(v.clamp(0, 255) as u8)
        }
    }
}

/// Keys' cubic convolution kernel (a = -0.5, Catmull-Rom): interpolating, so samples are reproduced exactly.
fn keys(t: f32) -> f32 {
    let t = t.abs();
    if t < 1.0 {
        1.5 * t * t * t - 2.5 * t * t + 1.0
    } else if t < 2.0 {
        -0.5 * t * t * t + 2.5 * t * t - 4.0 * t + 2.0
    } else {
        0.0
    }
}

/// Resamples one row or column of `n` values to `n * s`, output `i` sampling the input at `i / s`: input
/// pixel `j` lands on output `j * s`, where size upscaling puts it (slice 0), and stays exact there.
fn cubic_1d(src: impl Fn(usize) -> f32, n: usize, s: usize) -> Vec<f32> {
    (0..n * s)
        .map(|i| {
            let (j, f) = (i / s, (i % s) as f32 / s as f32);
            (-1i64..=2)
                .map(|d| {
                    let k = (j as i64 + d).clamp(0, n as i64 - 1) as usize;
                    src(k) * keys(d as f32 - f)
                })
                .sum()
        })
        .collect()
}

/// An alpha channel scaled `s` times with Catmull-Rom cubic interpolation aligned to slice 0 (see
/// [`cubic_1d`]): the small image's alpha comes back exactly at slice 0, and smoothly between.
pub fn upscale_aligned(alpha: &GrayImage, s: u32) -> GrayImage {
    let (w, h, s) = (alpha.width() as usize, alpha.height() as usize, s as usize);
    let rows: Vec<Vec<f32>> = (0..h)
        .map(|y| cubic_1d(|x| alpha.get_pixel(x as u32, y as u32).0[0] as f32, w, s))
        .collect();
    let mut out = GrayImage::new((w * s) as u32, (h * s) as u32);
    for x in 0..w * s {
        let col = cubic_1d(|y| rows[y][x], h, s);
        for (y, v) in col.into_iter().enumerate() {
            out.put_pixel(x as u32, y as u32, Luma([v.round().clamp(0.0, 255.0) as u8]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncompositing_inverts_compositing() {
        for a in 1..=255u8 {
            for v in 0..=255u8 {
                let img = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
                    1,
                    1,
                    image::Rgba([v, v, v, a]),
                ));
                let c = crate::data::composite_on_white(&img).get_pixel(0, 0).0[0];
                let back = uncomposite(c, a).unwrap();
                // Compositing loses precision as alpha falls; what comes back composites to the same colour.
                let again = crate::data::composite_on_white(&image::DynamicImage::ImageRgba8(
                    image::RgbaImage::from_pixel(1, 1, image::Rgba([back, back, back, a])),
                ))
                .get_pixel(0, 0)
                .0[0];
                assert_eq!(again, c, "v {v} a {a}");
            }
        }
        assert_eq!(uncomposite(200, 0), None);
    }

    #[test]
    fn aligned_upscaling_keeps_the_samples_and_flat_alpha() {
        let a = GrayImage::from_fn(5, 3, |x, y| Luma([((x * 53 + y * 97) % 256) as u8]));
        let up = upscale_aligned(&a, 4);
        assert_eq!(up.dimensions(), (20, 12));
        for y in 0..3 {
            for x in 0..5 {
                assert_eq!(up.get_pixel(4 * x, 4 * y), a.get_pixel(x, y));
            }
        }
        let flat = upscale_aligned(&GrayImage::from_pixel(3, 3, Luma([0])), 4);
        assert!(flat.pixels().all(|p| p.0[0] == 0));
    }
}
