//! The sampling calls: generate, complete, upscale size and depth, on canvases of any size. They share one
//! body, [`sample`]: read the parameters and the host's images, bound the memory, run the core sampler's
//! canvas job with the host's progress callback and job, and hand the images over.
use crate::boundary::{boundary, invalid, quiet, read_sized, spn_status, Fail};
use crate::image::{read_image, spn_image, spn_image_view, to_images, view_size};
use crate::job::{job_ref, SpnJob};
use crate::model::{SpnModel, MODELS};
use image::DynamicImage;
use spn_core::sampler::{
    CancelToken, CanvasJob, Pick, SampleOptions, SampleProgress, Sampler, MAX_DRAWS,
    MAX_UPSCALE_FACTOR,
};
use std::ffi::{c_int, c_void};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct spn_sample_params {
    pub struct_size: u32,
    pub count: u32,
    pub seed: u64,
    pub temperature: f32,
    pub batch_size: u32,
    pub progress: Option<extern "C" fn(*mut c_void, u64, u64) -> c_int>,
    pub user_data: *mut c_void,
    pub job: *mut SpnJob,
    // Since ABI version 3.
    pub width: u32,
    pub height: u32,
    pub overlap: i32,
    pub keep_alpha: u32,
    // Since ABI version 5.
    pub pick: u32,
    // Since ABI version 6 (`reserved`, always 0, before).
    pub upscale_factor: u32,
    // Since ABI version 7.
    pub draws: u32,
    pub reserved: u32,
}

impl spn_sample_params {
    /// Where each field ends: the struct sizes an older header may pass.
    pub const FIELD_ENDS: &'static [usize] =
        &[8, 16, 20, 24, 32, 40, 48, 52, 56, 60, 64, 68, 72, 76, 80];
    /// Where `keep_alpha` ends: hosts whose struct stops before it were built when outputs were RGB only.
    const KEEP_ALPHA_END: u32 = 64;
}

impl Default for spn_sample_params {
    fn default() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>() as u32,
            count: 1,
            seed: 0,
            temperature: 1.0,
            batch_size: 16,
            progress: None,
            user_data: std::ptr::null_mut(),
            job: std::ptr::null_mut(),
            width: 0,
            height: 0,
            overlap: -1,
            keep_alpha: 1,
            pick: 0,
            upscale_factor: 0,
            draws: 0,
            reserved: 0,
        }
    }
}

/// # Safety
/// `params` is NULL or points to a writable `spn_sample_params`.
#[no_mangle]
pub unsafe extern "C" fn spn_sample_params_init(params: *mut spn_sample_params) {
    quiet(|| {
        if !params.is_null() {
            // SAFETY: non-null and writable by the caller's contract.
            unsafe { params.write_unaligned(spn_sample_params::default()) };
        }
    })
}

/// Upper bound on images per call, so a typo cannot allocate the machine away.
const MAX_COUNT: u32 = 1 << 20;
/// Upper bound on the bytes of images one call returns (they are all held in memory at once).
const MAX_OUTPUT_BYTES: u64 = 4 << 30;
/// Upper bounds on one batch of windows, so that a call's working memory is bounded whatever batch_size a
/// host passes (spn.h): at most this many windows, and at most this many bytes of int64 values (8 bytes a
/// sub-pixel). The networks' activations grow with the batch too; 1024 windows keep them within a few hundred
/// MiB for the bundled models, and a GPU is saturated well before that.
const MAX_BATCH_IMAGES: u64 = 1024;
const MAX_BATCH_BYTES: u64 = 1 << 30;

/// A call's inputs, read from the host's views: what the canvas job borrows.
pub enum Inputs {
    Generate {
        width: u32,
        height: u32,
    },
    Complete {
        image: DynamicImage,
        known: Vec<bool>,
    },
    UpscaleSize {
        image: DynamicImage,
        factor: Option<u32>,
    },
    UpscaleDepth {
        image: DynamicImage,
    },
}

impl Inputs {
    fn job(&self) -> CanvasJob<'_> {
        match self {
            Inputs::Generate { width, height } => CanvasJob::Generate {
                width: *width,
                height: *height,
            },
            Inputs::Complete { image, known } => CanvasJob::Complete { image, known },
            Inputs::UpscaleSize { image, factor } => CanvasJob::UpscaleSize {
                image,
                factor: *factor,
            },
            Inputs::UpscaleDepth { image } => CanvasJob::UpscaleDepth { image },
        }
    }

    /// The size `(width, height, channels)` of one result.
    fn result_size(&self, scale: u64, keep_alpha: bool) -> (u64, u64, u64) {
        match self {
            Inputs::Generate { width, height } => (*width as u64, *height as u64, 3),
            Inputs::UpscaleSize { image, factor } => (
                image.width() as u64 * factor.map_or(scale, u64::from),
                image.height() as u64 * factor.map_or(scale, u64::from),
                channels(image, keep_alpha),
            ),
            Inputs::Complete { image, .. } | Inputs::UpscaleDepth { image } => (
                image.width() as u64,
                image.height() as u64,
                channels(image, keep_alpha),
            ),
        }
    }

    /// Without `keep_alpha`, images are composited over white first, so results are RGB as before ABI 3.
    fn flatten_alpha(&mut self) {
        match self {
            Inputs::Complete { image, .. }
            | Inputs::UpscaleSize { image, .. }
            | Inputs::UpscaleDepth { image } => {
                if image.color().has_alpha() {
                    *image = DynamicImage::ImageRgb8(spn_core::data::composite_on_white(image));
                }
            }
            Inputs::Generate { .. } => {}
        }
    }
}

fn channels(image: &DynamicImage, keep_alpha: bool) -> u64 {
    if keep_alpha && image.color().has_alpha() {
        4
    } else {
        3
    }
}

/// Checks the parameters against the model and the memory bounds; returns the seeds and batch size.
fn plan(
    p: &spn_sample_params,
    m: &SpnModel,
    (w, h, ch): (u64, u64, u64),
) -> Result<(Vec<u64>, usize), Fail> {
    if p.count == 0 || p.count > MAX_COUNT {
        return Err(invalid(format!(
            "count must be in 1..={MAX_COUNT}, got {}",
            p.count
        )));
    }
    if p.seed.checked_add(p.count as u64 - 1).is_none() {
        return Err(invalid(format!(
            "seed {} + count {} runs past the largest seed (seeds never wrap)",
            p.seed, p.count
        )));
    }
    // The canvas's own limits first (sides, pixels a job can hold), naming its size.
    spn_core::sampler::check_canvas_size("the result", w, h)?;
    // Every image is returned at once; past this, the host should call again with a later seed.
    let bytes = p.count as u64 * w * h * ch;
    if bytes > MAX_OUTPUT_BYTES {
        return Err(invalid(format!(
            "{} images of {w}x{h} take {} MiB, over the {} MiB one call returns: ask for fewer per call",
            p.count,
            bytes >> 20,
            MAX_OUTPUT_BYTES >> 20
        )));
    }
    if p.batch_size == 0 {
        return Err(invalid("batch_size must be at least 1"));
    }
    if p.pick > 1 {
        return Err(invalid(format!(
            "pick must be SPN_PICK_SAMPLE (0) or SPN_PICK_MEAN (1), got {}",
            p.pick
        )));
    }
    if p.draws as usize > MAX_DRAWS || (p.draws > 1 && p.pick != 0) {
        return Err(invalid(format!(
            "draws must be from 0 to {MAX_DRAWS}, and more than 1 only with SPN_PICK_SAMPLE (the mean pick gives the same image every draw); got {} with pick {}",
            p.draws, p.pick
        )));
    }
    if p.reserved != 0 {
        return Err(invalid("spn_sample_params.reserved must be 0"));
    }
    if p.overlap < -1 {
        return Err(invalid(format!(
            "overlap must be -1 (the default) or at least 0, got {}",
            p.overlap
        )));
    }
    // A batch is of model-size windows, whatever the canvas.
    let cfg = &m.net.config();
    let window_bytes = (cfg.height * cfg.width * 3) as u64;
    let fit = (MAX_BATCH_BYTES / (8 * window_bytes)).max(1);
    let batch = (p.batch_size as u64).min(fit).min(MAX_BATCH_IMAGES) as usize;
    Ok(((p.seed..=p.seed + (p.count as u64 - 1)).collect(), batch))
}

/// Shared body of the sampling calls: `read` gets the call's inputs from the host (inside the boundary,
/// after the parameters are read), then the canvas job runs with the host's progress callback and job.
///
/// # Safety
/// `params` is NULL or a struct of at least its `struct_size` bytes; `out_images` and `out_count` are NULL or
/// writable.
unsafe fn sample(
    name: &str,
    model: *const SpnModel,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
    read: impl FnOnce(&SpnModel, &spn_sample_params) -> Result<Inputs, Fail>,
) -> spn_status {
    boundary(name, || {
        let m = MODELS.get(model)?;
        if out_images.is_null() || out_count.is_null() {
            return Err(invalid("out_images and out_count must not be NULL"));
        }
        // SAFETY: NULL or struct_size readable bytes (the caller's contract).
        let p = unsafe { read_params(params) }?;
        let keep_alpha = p.keep_alpha != 0;
        let mut inputs = read(&m, &p)?;
        if !keep_alpha {
            inputs.flatten_alpha();
        }
        let scale = m.net.config().scale as u64;
        let (seeds, batch_size) = plan(&p, &m, inputs.result_size(scale, keep_alpha))?;
        let token = match job_ref(p.job)? {
            Some(j) => j.token.clone(),
            None => CancelToken::new(),
        };
        let options = SampleOptions {
            temperature: p.temperature as f64,
            batch_size,
            overlap: (p.overlap >= 0).then_some(p.overlap as usize),
            pick: match p.pick {
                1 => Pick::Mean,
                _ => Pick::Sample,
            },
            draws: (p.draws as usize).max(1),
            ..Default::default()
        };
        let sampler = Sampler::new(&*m.net, options)?;
        let (cb, user) = (p.progress, p.user_data);
        let mut progress = |pr: &SampleProgress| match cb {
            Some(f) => f(user, pr.done, pr.total) != 0,
            None => true,
        };
        let results = sampler.canvas(&inputs.job(), &seeds, &mut progress, &token)?;
        drop(inputs);
        let images = to_images(results)?;
        let n = images.len() as u32;
        // SAFETY: both are non-null (checked) and writable (the caller's contract). The boxed slice is given
        // to the host, which returns it through spn_images_free with this count.
        unsafe {
            *out_images = Box::into_raw(images) as *mut spn_image;
            *out_count = n;
        }
        Ok(())
    })
}

/// The host's parameters, defaults past its struct_size; a host built before ABI 3, or passing NULL, gets RGB
/// results.
///
/// # Safety
/// `params` is NULL or a struct of at least its `struct_size` bytes.
unsafe fn read_params(params: *const spn_sample_params) -> Result<spn_sample_params, Fail> {
    let default = spn_sample_params::default();
    // SAFETY: the caller's contract.
    let mut p = unsafe {
        read_sized(
            params,
            default,
            spn_sample_params::FIELD_ENDS,
            "spn_sample_params",
        )
    }?;
    // SAFETY: non-null structs start with their u32 struct_size (read_sized has read it too).
    let given = (!params.is_null()).then(|| unsafe { (params as *const u32).read_unaligned() });
    // NULL says nothing of the host's header, so it gets RGB as every ABI before 3 gave.
    if given.is_none_or(|size| size < spn_sample_params::KEEP_ALPHA_END) {
        p.keep_alpha = 0;
    }
    Ok(p)
}

/// # Safety
/// As spn.h documents for spn_generate: `params` NULL or sized, outputs writable.
#[no_mangle]
pub unsafe extern "C" fn spn_generate(
    model: *const SpnModel,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    let read = |m: &SpnModel, p: &spn_sample_params| {
        let cfg = m.net.config();
        let or = |v: u32, model: i64| if v == 0 { model as u32 } else { v };
        Ok(Inputs::Generate {
            width: or(p.width, cfg.width),
            height: or(p.height, cfg.height),
        })
    };
    // SAFETY: the caller's contract is sample's.
    unsafe { sample("spn_generate", model, params, out_images, out_count, read) }
}

/// # Safety
/// As spn_generate, and `image` and `mask` are NULL or valid views (spn.h).
#[no_mangle]
pub unsafe extern "C" fn spn_complete(
    model: *const SpnModel,
    image: *const spn_image_view,
    mask: *const spn_image_view,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    let read = |_: &SpnModel, _: &spn_sample_params| {
        // The mask must be the image's size: compared before any row of either is read.
        // SAFETY: NULL or valid views by the caller's contract.
        let ((iw, ih), (mw, mh)) =
            unsafe { (view_size(image, "image")?, view_size(mask, "mask")?) };
        if (iw, ih) != (mw, mh) {
            return Err(invalid(format!(
                "mask is {mw}x{mh} but the image is {iw}x{ih}"
            )));
        }
        // SAFETY: valid views by the caller's contract; read inside the boundary, any size.
        let img = unsafe { read_image(image, "image", None) }?;
        // SAFETY: as above.
        let m = unsafe { read_image(mask, "mask", Some((iw, ih))) }?;
        Ok(Inputs::Complete {
            image: img,
            known: spn_core::data::mask_flags(&m),
        })
    };
    // SAFETY: the caller's contract is sample's.
    unsafe { sample("spn_complete", model, params, out_images, out_count, read) }
}

/// # Safety
/// As spn_generate, and `image` is NULL or a valid view (spn.h).
#[no_mangle]
pub unsafe extern "C" fn spn_upscale_size(
    model: *const SpnModel,
    image: *const spn_image_view,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    let read = |_: &SpnModel, p: &spn_sample_params| {
        let factor = match p.upscale_factor {
            0 => None,
            f @ 2..=MAX_UPSCALE_FACTOR => Some(f),
            f => {
                return Err(invalid(format!(
                    "upscale_factor must be 0 (the model's scale) or from 2 to {MAX_UPSCALE_FACTOR}, got {f}"
                )))
            }
        };
        // SAFETY: a valid view by the caller's contract; read inside the boundary.
        let image = unsafe { read_image(image, "image", None) }?;
        Ok(Inputs::UpscaleSize { image, factor })
    };
    // SAFETY: the caller's contract is sample's.
    unsafe {
        sample(
            "spn_upscale_size",
            model,
            params,
            out_images,
            out_count,
            read,
        )
    }
}

/// # Safety
/// As spn_generate, and `image` is NULL or a valid view (spn.h).
#[no_mangle]
pub unsafe extern "C" fn spn_upscale_depth(
    model: *const SpnModel,
    image: *const spn_image_view,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    let read = |_: &SpnModel, _: &spn_sample_params| {
        // SAFETY: a valid view by the caller's contract; read inside the boundary.
        let image = unsafe { read_image(image, "image", None) }?;
        Ok(Inputs::UpscaleDepth { image })
    };
    // SAFETY: the caller's contract is sample's.
    unsafe {
        sample(
            "spn_upscale_depth",
            model,
            params,
            out_images,
            out_count,
            read,
        )
    }
}
