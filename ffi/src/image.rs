//! Images across the boundary: the host's views in (checked, then composited and masked by the core's one
//! rule each), libspn's images out (owned by the host until `spn_images_free`).
use crate::boundary::{
    boundary, c_path, internal, invalid, quiet, spn_status, Fail, SPN_ERR_BUFFER_TOO_SMALL,
    SPN_ERR_IO,
};
use image::DynamicImage;
use spn_core::sampler::CanvasImage;
use std::ffi::c_char;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct spn_image_view {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub stride: usize,
    pub data: *const u8,
}

#[repr(C)]
pub struct spn_image {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub stride: usize,
    pub data: *mut u8,
    pub seed: u64,
    pub bits: f64,
}

/// The size `(width, height)` of a model's images (scoring takes exactly that size).
pub fn model_size(p: &dyn spn_core::Network) -> (u32, u32) {
    let c = p.config();
    (c.width as u32, c.height as u32)
}

/// Largest side accepted from a caller: the image files the `spn` tool reads (65,535).
const MAX_SIDE: u32 = spn_core::data::MAX_IMAGE_SIDE;

/// A view's size, read without touching its pixels.
///
/// # Safety
/// `v` is NULL or points to a readable view.
pub unsafe fn view_size(v: *const spn_image_view, what: &str) -> Result<(u32, u32), Fail> {
    if v.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and a readable view by the caller's contract.
    let v = unsafe { v.read_unaligned() };
    Ok((v.width, v.height))
}

/// Checks a host's view and copies its pixels into an image of its own channel count.
///
/// # Safety
/// `v` is NULL or points to a view whose `data` holds `height` rows of `width * channels` bytes, `stride`
/// bytes apart (spn.h). Everything else (sizes, a stride or span that would overflow) is checked here.
pub unsafe fn read_image(
    v: *const spn_image_view,
    what: &str,
    expect: Option<(u32, u32)>,
) -> Result<DynamicImage, Fail> {
    if v.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and a readable view by the caller's contract; copied out before use.
    let v = unsafe { v.read_unaligned() };
    if v.data.is_null() {
        return Err(invalid(format!("{what}.data is NULL")));
    }
    let (w, h, ch) = (v.width, v.height, v.channels);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(invalid(format!(
            "{what} is {w}x{h}: sides must be in 1..={MAX_SIDE}"
        )));
    }
    // Compared before a single row is read: a view of another size than the call needs is refused, not
    // read, and so is one larger than a job can hold.
    if let Some((ew, eh)) = expect.filter(|&e| e != (w, h)) {
        return Err(invalid(format!("{what} is {w}x{h}; it must be {ew}x{eh}")));
    }
    // The canvas's one size rule (sides, pixels a job can hold), before a single row is read.
    spn_core::sampler::check_canvas_size(what, w as u64, h as u64)?;
    if !matches!(ch, 1 | 3 | 4) {
        return Err(invalid(format!("{what} has {ch} channels: use 1, 3 or 4")));
    }
    let row = w as usize * ch as usize;
    if v.stride < row {
        return Err(invalid(format!(
            "{what}.stride {} is less than width * channels = {row}",
            v.stride
        )));
    }
    // The bytes the view spans, end included, must be addressable: no wrapping row address.
    let span = v
        .stride
        .checked_mul(h as usize - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= isize::MAX as usize && (v.data as usize).checked_add(n).is_some())
        .ok_or_else(|| {
            invalid(format!(
                "{what}.stride {} over {h} rows runs past the end of the address space",
                v.stride
            ))
        })?;
    // SAFETY: the host promises `span` readable bytes at `data` (h rows of `row` bytes, `stride` apart), and
    // the span was checked to be a valid slice length that does not wrap.
    let bytes = unsafe { std::slice::from_raw_parts(v.data, span) };
    let mut packed = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        packed.extend_from_slice(&bytes[y * v.stride..y * v.stride + row]);
    }
    let bad = || internal("image buffer size");
    Ok(match ch {
        1 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, packed).ok_or_else(bad)?),
        3 => DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, packed).ok_or_else(bad)?),
        _ => DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, packed).ok_or_else(bad)?),
    })
}

/// A host's image as the RGB image the sampler takes (composited on white, gray replicated).
///
/// # Safety
/// As [`read_image`].
pub unsafe fn read_view(
    v: *const spn_image_view,
    what: &str,
    expect: (u32, u32),
) -> Result<image::RgbImage, Fail> {
    // SAFETY: the caller's contract is read_image's.
    let img = unsafe { read_image(v, what, Some(expect)) }?;
    Ok(spn_core::data::composite_on_white(&img))
}

/// Hands results to the host: each pixel buffer is a boxed slice of exactly `stride * height` bytes (RGB, or
/// RGBA where the input had alpha), which `spn_images_free` rebuilds. The results' own buffers are moved, not
/// copied.
pub fn to_images(results: Vec<CanvasImage>) -> Result<Box<[spn_image]>, Fail> {
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let (w, h) = (r.image.width(), r.image.height());
        let (channels, buf) = match r.image {
            DynamicImage::ImageRgba8(i) => (4u32, i.into_raw()),
            DynamicImage::ImageRgb8(i) => (3, i.into_raw()),
            other => (3, other.to_rgb8().into_raw()),
        };
        if buf.len() != (w * channels) as usize * h as usize {
            return Err(internal("image buffer size"));
        }
        out.push(spn_image {
            width: w,
            height: h,
            channels,
            stride: (channels * w) as usize,
            data: Box::into_raw(buf.into_boxed_slice()) as *mut u8,
            seed: r.seed,
            bits: r.bits,
        });
    }
    Ok(out.into_boxed_slice())
}

/// # Safety
/// `images` is NULL or an array of `count` images returned by one sampling call, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn spn_images_free(images: *mut spn_image, count: u32) {
    quiet(|| {
        if images.is_null() {
            return;
        }
        // SAFETY: the array was made by `to_images` as a boxed slice of `count` images (the caller's
        // contract), so it is rebuilt with the same length.
        let all =
            unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(images, count as usize)) };
        for im in all.iter().filter(|im| !im.data.is_null()) {
            let len = im.stride * im.height as usize;
            // SAFETY: each buffer is a boxed slice of exactly stride * height bytes (`to_images`).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(im.data, len)) });
        }
    })
}

/// # Safety
/// `image` is NULL or an image returned by libspn and not yet freed; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn spn_image_write_png(
    image: *const spn_image,
    path: *const c_char,
) -> spn_status {
    boundary("spn_image_write_png", || {
        if image.is_null() {
            return Err(invalid("image is NULL"));
        }
        // SAFETY: NULL or NUL-terminated (the caller's contract).
        let path = unsafe { c_path(path, "path") }?.ok_or_else(|| invalid("path is NULL"))?;
        // SAFETY: non-null, and an image libspn returned (the caller's contract).
        let im = unsafe { &*image };
        if im.data.is_null()
            || !matches!(im.channels, 3 | 4)
            || im.stride != (im.channels * im.width) as usize
        {
            return Err(invalid("not an image returned by libspn"));
        }
        let len = im.stride * im.height as usize;
        // SAFETY: libspn's images own exactly stride * height bytes at data (`to_images`).
        let buf = unsafe { std::slice::from_raw_parts(im.data, len) }.to_vec();
        let bad = || invalid("bad image size");
        let img = if im.channels == 4 {
            DynamicImage::ImageRgba8(
                image::RgbaImage::from_raw(im.width, im.height, buf).ok_or_else(bad)?,
            )
        } else {
            DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(im.width, im.height, buf).ok_or_else(bad)?,
            )
        };
        spn_core::data::save_any(&img, &path).map_err(|e| Fail(SPN_ERR_IO, e.to_string()))?;
        Ok(())
    })
}

/// # Safety
/// `mask` is NULL or a valid view; `known` is NULL or `capacity` writable bytes (spn.h).
#[no_mangle]
pub unsafe extern "C" fn spn_mask_known(
    mask: *const spn_image_view,
    known: *mut u8,
    capacity: usize,
) -> spn_status {
    boundary("spn_mask_known", || {
        if mask.is_null() || known.is_null() {
            return Err(invalid("mask and known must not be NULL"));
        }
        // SAFETY: non-null, and a readable view by the caller's contract; only its size is read here.
        let v = unsafe { mask.read_unaligned() };
        let needed = v.width as usize * v.height as usize;
        if capacity < needed {
            return Err(Fail(
                SPN_ERR_BUFFER_TOO_SMALL,
                format!("known holds {capacity} bytes; {needed} needed"),
            ));
        }
        // SAFETY: the caller's contract is read_image's.
        let img = unsafe { read_image(mask, "mask", None) }?;
        let flags: Vec<u8> = spn_core::data::mask_flags(&img)
            .into_iter()
            .map(u8::from)
            .collect();
        // SAFETY: `known` holds `capacity` >= needed == flags.len() bytes (checked above).
        unsafe { std::ptr::copy_nonoverlapping(flags.as_ptr(), known, flags.len()) };
        Ok(())
    })
}
