//! `spn_score`: exact bits of an image and, optionally, of each of its sub-pixels.
use crate::boundary::{boundary, invalid, spn_status, Fail, SPN_ERR_BUFFER_TOO_SMALL};
use crate::image::{model_size, read_view, spn_image_view};
use crate::model::{SpnModel, MODELS};
use spn_core::sampler::{SampleOptions, Sampler};

/// # Safety
/// `image` is NULL or a valid view; `out_total_bits` NULL or writable; `per_subpixel` NULL or `capacity`
/// writable floats (spn.h).
#[no_mangle]
pub unsafe extern "C" fn spn_score(
    model: *const SpnModel,
    image: *const spn_image_view,
    out_total_bits: *mut f64,
    per_subpixel: *mut f32,
    capacity: usize,
) -> spn_status {
    boundary("spn_score", || {
        let m = MODELS.get(model)?;
        if out_total_bits.is_null() {
            return Err(invalid("out_total_bits is NULL"));
        }
        // SAFETY: a valid view by the caller's contract.
        let rgb = unsafe { read_view(image, "image", model_size(&*m.net)) }?;
        let needed = (rgb.height() * rgb.width() * 3) as usize;
        if !per_subpixel.is_null() && capacity < needed {
            return Err(Fail(
                SPN_ERR_BUFFER_TOO_SMALL,
                format!("per_subpixel holds {capacity} floats; {needed} needed"),
            ));
        }
        let sampler = Sampler::new(&*m.net, SampleOptions::default())?;
        let r = sampler.score(&rgb)?;
        // SAFETY: out_total_bits is non-null and writable; per_subpixel, when non-null, holds `capacity` >=
        // needed == r.bits.len() floats (checked above; score returns one value a sub-pixel).
        unsafe {
            if !per_subpixel.is_null() {
                std::ptr::copy_nonoverlapping(
                    r.bits.as_ptr(),
                    per_subpixel,
                    r.bits.len().min(capacity),
                );
            }
            *out_total_bits = r.total_bits;
        }
        Ok(())
    })
}
