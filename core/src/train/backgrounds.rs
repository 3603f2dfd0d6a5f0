//! Coloured backgrounds behind training examples (`spn train --backgrounds P`, issue 15 item 5).
//!
//! The emoji sets are composited on white, so a model trained on them learns that anything not drawn is
//! white: upscaling a flat green patch gave white speckle with green dots (models/README.md, "Upscaling
//! against classic filters"). A designer's canvas has flat colour, gradients and coloured backgrounds. Data
//! kept with its alpha (`spn data --keep-alpha`) lets each example be composited, with probability P, over a
//! random flat colour or linear gradient instead of white; some of those examples show the background alone,
//! so that flat regions and gradients are seen without a subject too. The other examples are composited on
//! white by the same rule as everywhere else ([`crate::data::composite_on_white`]), so P = 0 is the plain
//! data set.
use crate::error::{Error, Result};
use rand::Rng;
use tch::{Kind, Tensor};

/// What one example is composited over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backdrop {
    White,
    Flat([u8; 3]),
    /// A linear ramp from `from` to `to` along the direction `angle` (radians), spanning the image.
    Gradient {
        from: [u8; 3],
        to: [u8; 3],
        angle: f64,
    },
}

/// One example's backdrop and whether its subject is kept (false: the backdrop alone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub backdrop: Backdrop,
    pub subject: bool,
}

/// Of the examples given a coloured backdrop: the share over a gradient (the rest flat), and the share
/// showing the backdrop alone.
const GRADIENT_SHARE: f64 = 0.4;
const ALONE_SHARE: f64 = 0.2;

fn colour(rng: &mut impl Rng) -> [u8; 3] {
    [rng.gen(), rng.gen(), rng.gen()]
}

/// The backdrops of `n` examples, each coloured with probability `p`. Draws nothing when `p` is 0, so runs
/// without backgrounds keep their random streams.
pub fn choose(rng: &mut impl Rng, n: usize, p: f64) -> Vec<Choice> {
    let white = Choice {
        backdrop: Backdrop::White,
        subject: true,
    };
    if p <= 0.0 {
        return vec![white; n];
    }
    (0..n)
        .map(|_| {
            if !rng.gen_bool(p.min(1.0)) {
                return white;
            }
            let backdrop = if rng.gen_bool(GRADIENT_SHARE) {
                Backdrop::Gradient {
                    from: colour(rng),
                    to: colour(rng),
                    angle: rng.gen_range(0.0..std::f64::consts::TAU),
                }
            } else {
                Backdrop::Flat(colour(rng))
            };
            Choice {
                backdrop,
                subject: !rng.gen_bool(ALONE_SHARE),
            }
        })
        .collect()
}

/// The backdrop as `(3, H, W)` int32 levels.
fn backdrop_tensor(b: Backdrop, h: i64, w: i64) -> Result<Tensor> {
    let level = |c: [u8; 3]| -> Result<Tensor> {
        let c: Vec<i32> = c.iter().map(|&v| v as i32).collect();
        Ok(Tensor::f_from_slice(&c)?.f_view([3, 1, 1])?)
    };
    Ok(match b {
        Backdrop::White => level([255; 3])?.f_expand([3, h, w], false)?,
        Backdrop::Flat(c) => level(c)?.f_expand([3, h, w], false)?,
        Backdrop::Gradient { from, to, angle } => {
            // Position along the direction, scaled so that the image's corners reach 0 and 1.
            let (dx, dy) = (angle.cos(), angle.sin());
            let xs = Tensor::f_arange(w, (Kind::Double, tch::Device::Cpu))?.f_view([1, w])?;
            let ys = Tensor::f_arange(h, (Kind::Double, tch::Device::Cpu))?.f_view([h, 1])?;
            let proj = xs.f_mul_scalar(dx)?.f_add(&ys.f_mul_scalar(dy)?)?;
            let corners = [
                0.0,
                (w - 1) as f64 * dx,
                (h - 1) as f64 * dy,
                (w - 1) as f64 * dx + (h - 1) as f64 * dy,
            ];
            let lo = corners.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let t = proj
                .f_sub_scalar(lo)?
                .f_div_scalar((hi - lo).max(1e-9))?
                .f_view([1, h, w])?;
            let (a, b) = (
                level(from)?.f_to_kind(Kind::Double)?,
                level(to)?.f_to_kind(Kind::Double)?,
            );
            a.f_add(&b.f_sub(&a)?.f_mul(&t)?)?
                .f_round()?
                .f_to_kind(Kind::Int)?
        }
    })
}

/// Composites `(B, 4, H, W)` uint8 straight-alpha examples over their backdrops into `(B, 3, H, W)` uint8,
/// with the rounding of [`crate::data::composite_on_white`] (which it equals for [`Backdrop::White`]).
pub fn composite(rgba: &Tensor, choices: &[Choice]) -> Result<Tensor> {
    let (n, c, h, w) = rgba.size4()?;
    if c != 4 || n != choices.len() as i64 {
        return Err(Error::Other(format!(
            "backgrounds: {} choices for a batch of shape {:?}",
            choices.len(),
            rgba.size()
        )));
    }
    let device = rgba.device();
    let x = rgba.f_to_kind(Kind::Int)?;
    let colour = x.f_narrow(1, 0, 3)?;
    let keep: Vec<i32> = choices.iter().map(|c| c.subject as i32).collect();
    let keep = Tensor::f_from_slice(&keep)?
        .f_to_device(device)?
        .f_view([n, 1, 1, 1])?;
    let alpha = x.f_narrow(1, 3, 1)?.f_mul(&keep)?;
    let bgs = choices
        .iter()
        .map(|c| backdrop_tensor(c.backdrop, h, w))
        .collect::<Result<Vec<_>>>()?;
    let bg = Tensor::f_stack(&bgs, 0)?.f_to_device(device)?;
    let mixed = colour
        .f_mul(&alpha)?
        .f_add(&bg.f_mul(&alpha.f_neg()?.f_add_scalar(255)?)?)?
        .f_add_scalar(127)?
        .f_floor_divide_scalar(255)?;
    Ok(mixed.f_to_kind(Kind::Uint8)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rgba_image(w: u32, h: u32) -> image::RgbaImage {
        image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([
                (x * 37) as u8,
                (y * 53) as u8,
                ((x + y) * 11) as u8,
                ((x * 7 + y * 29) % 256) as u8,
            ])
        })
    }

    fn to_tensor(img: &image::RgbaImage) -> Tensor {
        let (w, h) = (img.width() as i64, img.height() as i64);
        Tensor::from_slice(img.as_raw())
            .view([h, w, 4])
            .permute([2, 0, 1])
            .unsqueeze(0)
    }

    #[test]
    fn white_equals_the_one_compositing_rule() {
        let img = rgba_image(9, 7);
        let want = crate::data::to_tensor(&crate::data::composite_on_white(
            &image::DynamicImage::ImageRgba8(img.clone()),
        ))
        .unwrap();
        let white = Choice {
            backdrop: Backdrop::White,
            subject: true,
        };
        let got = composite(&to_tensor(&img), &[white]).unwrap();
        assert!(got.get(0).equal(&want));
    }

    #[test]
    fn backdrops_show_through_transparency_only() {
        let mut img = rgba_image(8, 8);
        for (x, _, p) in img.enumerate_pixels_mut() {
            p.0[3] = if x < 4 { 255 } else { 0 };
        }
        let green = Choice {
            backdrop: Backdrop::Flat([0, 200, 0]),
            subject: true,
        };
        let out = composite(&to_tensor(&img), &[green]).unwrap().get(0);
        let opaque = to_tensor(&img).get(0).narrow(0, 0, 3).narrow(2, 0, 4);
        assert!(out.narrow(2, 0, 4).equal(&opaque));
        let right = Vec::<u8>::try_from(out.narrow(2, 4, 4).flatten(0, -1)).unwrap();
        assert!(right
            .chunks(32)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&v| v == [0, 200, 0][i])));
        let alone = Choice {
            backdrop: Backdrop::Flat([0, 200, 0]),
            subject: false,
        };
        let out = composite(&to_tensor(&img), &[alone]).unwrap().get(0);
        assert!(out.narrow(0, 1, 1).eq(200).all().int64_value(&[]) == 1);
    }

    #[test]
    fn gradients_run_from_one_colour_to_the_other() {
        let img = image::RgbaImage::new(16, 4); // fully transparent
        let g = Backdrop::Gradient {
            from: [0, 0, 0],
            to: [255, 100, 50],
            angle: 0.0,
        };
        let out = composite(
            &to_tensor(&img),
            &[Choice {
                backdrop: g,
                subject: true,
            }],
        )
        .unwrap()
        .get(0);
        let row = |c: i64| Vec::<u8>::try_from(out.get(c).get(2)).unwrap();
        assert_eq!((row(0)[0], row(0)[15]), (0, 255));
        assert_eq!((row(1)[15], row(2)[15]), (100, 50));
        assert!(
            row(0).windows(2).all(|p| p[0] <= p[1]),
            "a ramp: {:?}",
            row(0)
        );
    }

    #[test]
    fn no_backgrounds_draws_nothing() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        assert!(choose(&mut a, 5, 0.0)
            .iter()
            .all(|c| c.backdrop == Backdrop::White && c.subject));
        let mut b2 = b.clone();
        assert_eq!(a.gen::<u64>(), b2.gen::<u64>());
        let mixed = choose(&mut a, 2000, 0.5);
        let coloured = mixed
            .iter()
            .filter(|c| c.backdrop != Backdrop::White)
            .count();
        assert!(
            (900..1100).contains(&coloured),
            "{coloured} of 2000 at p = 0.5"
        );
    }
}
