//! Transparency, carried beside the networks (docs/design.md section 8): the networks see colour composited
//! over white ([`crate::data::composite_on_white`], as in training); alpha is kept exactly where pixels are
//! known, scaled with a standard filter for size upscaling, and opaque where the model draws.
use crate::resample::{self, Kernel};
use image::GrayImage;

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

/// An alpha channel scaled `s` times with Catmull-Rom cubic interpolation aligned to slice 0
/// ([`crate::resample`]): the small image's alpha comes back exactly at slice 0, and smoothly between.
pub fn upscale_aligned(alpha: &GrayImage, s: u32) -> GrayImage {
    let (w, h) = alpha.dimensions();
    let up = resample::upscale_aligned(
        alpha.as_raw(),
        (w as usize, h as usize, 1),
        s as usize,
        Kernel::CatmullRom,
    );
    GrayImage::from_raw(w * s, h * s, up).unwrap_or_else(|| GrayImage::new(w * s, h * s))
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
        let a = GrayImage::from_fn(5, 3, |x, y| image::Luma([((x * 53 + y * 97) % 256) as u8]));
        let up = upscale_aligned(&a, 4);
        assert_eq!(up.dimensions(), (20, 12));
        for y in 0..3 {
            for x in 0..5 {
                assert_eq!(up.get_pixel(4 * x, 4 * y), a.get_pixel(x, y));
            }
        }
        let flat = upscale_aligned(&GrayImage::from_pixel(3, 3, image::Luma([0])), 4);
        assert!(flat.pixels().all(|p| p.0[0] == 0));
    }
}
