//! Subscale ordering and the depth split (docs/design.md sections 1 and 2): the one slicing implementation,
//! tested against the definition.
//!
//! Images are `(B, C, H, W)` integer arrays. Slice `k = i*S + j` holds the pixels `x[i + S*r, j + S*c]`;
//! the slice stack is `(B, C, S*S, H/S, W/S)`. The sampler works on host arrays ([`to_slices_host`]); training
//! and exact evaluation on libtorch tensors ([`to_slices`]): tests hold the two to each other.
use crate::error::{Error, Result};
#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

/// [`to_slices`] on a host array: `x` `(lead, H, W)` -> `(lead, S*S, H/S, W/S)`.
pub fn to_slices_host<T: Copy + Default>(x: &[T], hw: (usize, usize), s: usize) -> Result<Vec<T>> {
    permute_host(x, hw, s, true)
}

/// Inverse of [`to_slices_host`]: `(lead, S*S, h, w)` -> `(lead, h*S, w*S)`; `(h, w)` is the full size.
pub fn from_slices_host<T: Copy + Default>(
    x: &[T],
    hw: (usize, usize),
    s: usize,
) -> Result<Vec<T>> {
    permute_host(x, hw, s, false)
}

/// The one subscale permutation of each `H x W` image of `x`, image to slices (`to_slices`) or back: pixel
/// `(y, x)` is position `(y / S, x / S)` of slice `(y % S) * S + x % S`.
fn permute_host<T: Copy + Default>(
    x: &[T],
    (h, w): (usize, usize),
    s: usize,
    to_slices: bool,
) -> Result<Vec<T>> {
    if s < 1 || h % s != 0 || w % s != 0 || !x.len().is_multiple_of((h * w).max(1)) {
        return Err(Error::input(format!("scale {s} must divide {w}x{h}")));
    }
    let (sh, sw) = (h / s, w / s);
    let mut out = vec![T::default(); x.len()];
    for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for y in 0..h {
            for xx in 0..w {
                let sliced = ((((y % s) * s + xx % s) * sh + y / s) * sw) + xx / s;
                let (from, to) = match to_slices {
                    true => (y * w + xx, sliced),
                    false => (sliced, y * w + xx),
                };
                dst[to] = src[from];
            }
        }
    }
    Ok(out)
}

/// [`split_depth`] of one value: its `b` most significant bits and its `8-b` low bits.
pub fn split_value(v: i64, b: u32) -> (i64, i64) {
    let shift = 8 - b.clamp(1, 8);
    (v >> shift, v & ((1 << shift) - 1))
}

/// Inverse of [`split_value`].
pub fn merge_value(m: i64, l: i64, b: u32) -> i64 {
    (m << (8 - b.clamp(1, 8))) + l
}

#[cfg(feature = "torch")]
/// The subscale split over the last two dims: `(..., H, W)` -> `(..., S*S, H/S, W/S)`, slice `k = i*S + j`
/// holding the pixels `x[..., i + S*r, j + S*c]`. The leading dims are anything (batch, channel, one-hot level).
pub fn to_slices(x: &Tensor, s: i64) -> Result<Tensor> {
    let size = x.size();
    let n = size.len();
    if n < 2 {
        return Err(Error::input("expected a tensor with two spatial dims"));
    }
    let (h, w) = (size[n - 2], size[n - 1]);
    if s < 1 || h % s != 0 || w % s != 0 {
        return Err(Error::input(format!("scale {s} must divide {h}x{w}")));
    }
    let lead: Vec<i64> = size[..n - 2].to_vec();
    let mut shape = lead.clone();
    shape.extend([h / s, s, w / s, s]);
    let m = lead.len() as i64;
    let mut perm: Vec<i64> = (0..m).collect();
    perm.extend([m + 1, m + 3, m, m + 2]);
    let mut out = lead;
    out.extend([s * s, h / s, w / s]);
    Ok(x.f_reshape(shape)?.f_permute(perm)?.f_reshape(out)?)
}

#[cfg(feature = "torch")]
/// Inverse of [`to_slices`]: `(..., S*S, h, w)` -> `(..., h*S, w*S)`.
pub fn from_slices(x: &Tensor, s: i64) -> Result<Tensor> {
    let size = x.size();
    let n = size.len();
    if n < 3 || size[n - 3] != s * s {
        return Err(Error::input(format!(
            "expected (..., {}, h, w) slices, got {size:?}",
            s * s
        )));
    }
    let (h, w) = (size[n - 2], size[n - 1]);
    let lead: Vec<i64> = size[..n - 3].to_vec();
    let m = lead.len() as i64;
    let mut shape = lead.clone();
    shape.extend([s, s, h, w]);
    // (.., i, j, r, c) -> (.., r, i, c, j)
    let mut perm: Vec<i64> = (0..m).collect();
    perm.extend([m + 2, m, m + 3, m + 1]);
    let mut out = lead;
    out.extend([h * s, w * s]);
    Ok(x.f_reshape(shape)?.f_permute(perm)?.f_reshape(out)?)
}

#[cfg(feature = "torch")]
/// Splits 8-bit values into their `b` most significant bits and the `8-b` low bits.
pub fn split_depth(x: &Tensor, b: u32) -> Result<(Tensor, Tensor)> {
    check_bits(b)?;
    let x = x.f_to_kind(Kind::Int64)?;
    let shift = 8 - b as i64;
    let msb = x.f_div_scalar_mode(1i64 << shift, "floor")?;
    let lsb = x.f_remainder(1i64 << shift)?;
    Ok((msb, lsb))
}

#[cfg(feature = "torch")]
/// Inverse of [`split_depth`]: `(m << (8-b)) | l`.
pub fn merge_depth(msb: &Tensor, lsb: &Tensor, b: u32) -> Result<Tensor> {
    check_bits(b)?;
    let shift = 8 - b as i64;
    Ok(msb
        .f_to_kind(Kind::Int64)?
        .f_mul_scalar(1i64 << shift)?
        .f_add(&lsb.f_to_kind(Kind::Int64)?)?)
}

#[cfg(feature = "torch")]
fn check_bits(b: u32) -> Result<()> {
    if !(1..=8).contains(&b) {
        return Err(Error::input(format!(
            "bit depth split {b} must be in 1..=8"
        )));
    }
    Ok(())
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;

    fn ramp(b: i64, c: i64, h: i64, w: i64) -> Tensor {
        Tensor::arange(b * c * h * w, (Kind::Int64, tch::Device::Cpu)).reshape([b, c, h, w])
    }

    #[test]
    fn roundtrip_for_every_scale() {
        for (h, w) in [(8, 8), (12, 6), (16, 16)] {
            let x = ramp(2, 3, h, w);
            for s in 1..=h.min(w) {
                if h % s != 0 || w % s != 0 {
                    assert!(to_slices(&x, s).is_err());
                    continue;
                }
                let sl = to_slices(&x, s).unwrap();
                assert_eq!(sl.size(), vec![2, 3, s * s, h / s, w / s]);
                // The host arrays' slicing is the same permutation.
                let flat = Vec::<i64>::try_from(x.flatten(0, -1)).unwrap();
                let hs = to_slices_host(&flat, (h as usize, w as usize), s as usize).unwrap();
                assert_eq!(hs, Vec::<i64>::try_from(sl.flatten(0, -1)).unwrap());
                let back = from_slices_host(&hs, (h as usize, w as usize), s as usize).unwrap();
                assert_eq!(back, flat);
                assert!(from_slices(&sl, s).unwrap().equal(&x), "h={h} w={w} s={s}");
            }
        }
    }

    /// Position of pixel `(y, x)` in subscale order, from the definition: (slice, row, column in the slice).
    fn subscale_position(y: i64, x: i64, s: i64) -> (i64, i64, i64) {
        ((y % s) * s + (x % s), y / s, x / s)
    }

    #[test]
    fn slice_layout_matches_definition() {
        let (h, w, s) = (12i64, 8i64, 4i64);
        let x = ramp(1, 3, h, w);
        let sl = to_slices(&x, s).unwrap();
        for i in 0..s {
            for j in 0..s {
                for c in 0..3 {
                    for r in 0..h / s {
                        for q in 0..w / s {
                            let v = sl.int64_value(&[0, c, i * s + j, r, q]);
                            assert_eq!(v, x.int64_value(&[0, c, i + s * r, j + s * q]));
                            assert_eq!(
                                subscale_position(i + s * r, j + s * q, s),
                                (i * s + j, r, q)
                            );
                        }
                    }
                }
            }
        }
        // Slice 0 is the image subsampled every S pixels.
        let sub = x.slice(2, 0, h, s).slice(3, 0, w, s);
        assert!(sl.select(2, 0).equal(&sub));
        // Any leading dims (the one-hot level axis of soft values, say) are carried along.
        let soft = ramp(2, 3 * 5, h, w).reshape([2, 3, 5, h, w]);
        let ss = to_slices(&soft, s).unwrap();
        assert_eq!(ss.size(), vec![2, 3, 5, s * s, h / s, w / s]);
        assert!(ss
            .select(2, 4)
            .equal(&to_slices(&soft.select(2, 4), s).unwrap()));
    }

    #[test]
    fn depth_split_and_merge_are_exact() {
        let x = Tensor::arange(256, (Kind::Int64, tch::Device::Cpu)).reshape([1, 1, 16, 16]);
        for b in 1..=8u32 {
            let (m, l) = split_depth(&x, b).unwrap();
            for v in 0..256i64 {
                let (r, c) = (v / 16, v % 16);
                assert_eq!(m.int64_value(&[0, 0, r, c]), v >> (8 - b));
                assert_eq!(l.int64_value(&[0, 0, r, c]), v & ((1 << (8 - b)) - 1));
            }
            assert!(merge_depth(&m, &l, b).unwrap().equal(&x));
            for v in 0..256i64 {
                let (mv, lv) = split_value(v, b);
                assert_eq!((mv, lv), (v >> (8 - b), v & ((1 << (8 - b)) - 1)));
                assert_eq!(merge_value(mv, lv, b), v);
            }
        }
        assert!(split_depth(&x, 0).is_err());
        assert!(split_depth(&x, 9).is_err());
    }
}
