//! The sampling calls: generate, complete, upscale size and depth. They share one body, [`sample`]: read
//! the parameters, bound the memory, run the core sampler with the host's progress callback and job, and
//! hand the images over.
use crate::boundary::{boundary, invalid, quiet, read_sized, spn_status, Fail};
use crate::image::{model_size, read_mask, read_view, spn_image, spn_image_view, to_images};
use crate::job::{job_ref, SpnJob};
use crate::model::{SpnModel, MODELS};
use spn_core::sampler::{CancelToken, SampleOptions, SampleProgress, Sampler, Samples};
use spn_core::Error;
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
}

impl spn_sample_params {
    /// Where each field ends: the struct sizes an older header may pass.
    pub const FIELD_ENDS: &'static [usize] = &[8, 16, 20, 24, 32, 40, 48];
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
/// Upper bounds on one batch, so that a call's working memory is bounded whatever batch_size a host passes
/// (spn.h): at most this many images, and at most this many bytes of int64 values (8 bytes a sub-pixel).
/// The networks' activations grow with the batch too; 1024 images keep them within a few hundred MiB for
/// the bundled models, and a GPU is saturated well before that.
const MAX_BATCH_IMAGES: u64 = 1024;
const MAX_BATCH_BYTES: u64 = 1 << 30;

/// Checks the parameters against the model and the memory bounds; returns the seeds and batch size.
fn plan(p: &spn_sample_params, m: &SpnModel) -> Result<(Vec<u64>, usize), Fail> {
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
    // Every image is returned at once; past this, the host should call again with a later seed.
    let cfg = &m.pipeline.config();
    let image_bytes = (cfg.height * cfg.width * 3) as u64;
    let bytes = p.count as u64 * image_bytes;
    if bytes > MAX_OUTPUT_BYTES {
        return Err(invalid(format!(
            "{} images of {}x{} take {} MiB, over the {} MiB one call returns: ask for fewer per call",
            p.count,
            cfg.width,
            cfg.height,
            bytes >> 20,
            MAX_OUTPUT_BYTES >> 20
        )));
    }
    if p.batch_size == 0 {
        return Err(invalid("batch_size must be at least 1"));
    }
    let fit = (MAX_BATCH_BYTES / (8 * image_bytes)).max(1);
    let batch = (p.batch_size as u64)
        .min(p.count as u64)
        .min(fit)
        .min(MAX_BATCH_IMAGES) as usize;
    Ok(((p.seed..=p.seed + (p.count as u64 - 1)).collect(), batch))
}

type Job<'a> = dyn FnOnce(
        &Sampler,
        &[u64],
        &mut dyn FnMut(&SampleProgress) -> bool,
        &CancelToken,
    ) -> spn_core::Result<Samples>
    + 'a;

/// Shared body of the sampling calls.
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
    job: Box<Job<'_>>,
) -> spn_status {
    boundary(name, || {
        let m = MODELS.get(model)?;
        if out_images.is_null() || out_count.is_null() {
            return Err(invalid("out_images and out_count must not be NULL"));
        }
        let default = spn_sample_params::default();
        // SAFETY: NULL or struct_size readable bytes (the caller's contract).
        let p = unsafe {
            read_sized(
                params,
                default,
                spn_sample_params::FIELD_ENDS,
                "spn_sample_params",
            )
        }?;
        let (seeds, batch_size) = plan(&p, &m)?;
        let token = match job_ref(p.job)? {
            Some(j) => j.token.clone(),
            None => CancelToken::new(),
        };
        let options = SampleOptions {
            temperature: p.temperature as f64,
            batch_size,
            ..Default::default()
        };
        let sampler = Sampler::new(&m.pipeline, options)?;
        let (cb, user) = (p.progress, p.user_data);
        let mut progress = |pr: &SampleProgress| match cb {
            Some(f) => f(user, pr.done, pr.total) != 0,
            None => true,
        };
        let samples = job(&sampler, &seeds, &mut progress, &token)?;
        let images = to_images(&samples)?;
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

/// # Safety
/// As spn.h documents for spn_generate: `params` NULL or sized, outputs writable.
#[no_mangle]
pub unsafe extern "C" fn spn_generate(
    model: *const SpnModel,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    let job = Box::new(
        |s: &Sampler,
         seeds: &[u64],
         pr: &mut dyn FnMut(&SampleProgress) -> bool,
         t: &CancelToken| { s.generate(seeds, pr, t) },
    );
    // SAFETY: the caller's contract is sample's.
    unsafe { sample("spn_generate", model, params, out_images, out_count, job) }
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
    let job = Box::new(
        |s: &Sampler,
         seeds: &[u64],
         pr: &mut dyn FnMut(&SampleProgress) -> bool,
         t: &CancelToken| {
            // SAFETY: valid views by the caller's contract; read inside the boundary.
            let size = model_size(s.pipeline(), false);
            let img = unsafe { read_view(image, "image", size) }.map_err(Error::from)?;
            // SAFETY: as above.
            let known = unsafe { read_mask(mask, "mask", size) }.map_err(Error::from)?;
            let (ih, iw, mh, mw) = (
                img.size()[1],
                img.size()[2],
                known.size()[0],
                known.size()[1],
            );
            if (mh, mw) != (ih, iw) {
                return Err(Error::Input(format!(
                    "mask is {mw}x{mh} but the image is {iw}x{ih}"
                )));
            }
            s.complete(&img, &known, seeds, pr, t)
        },
    );
    // SAFETY: the caller's contract is sample's.
    unsafe { sample("spn_complete", model, params, out_images, out_count, job) }
}

/// An upscaling job: whether its input is the small image (slice 0), and the sampler call.
type Upscale = (
    bool,
    fn(
        &Sampler,
        &tch::Tensor,
        &[u64],
        &mut dyn FnMut(&SampleProgress) -> bool,
        &CancelToken,
    ) -> spn_core::Result<Samples>,
);

/// The two upscaling calls: one input image, then the sampler job `f`.
///
/// # Safety
/// As spn_generate, and `image` is NULL or a valid view (spn.h).
unsafe fn upscale(
    name: &str,
    f: Upscale,
    model: *const SpnModel,
    image: *const spn_image_view,
    params: *const spn_sample_params,
    out: (*mut *mut spn_image, *mut u32),
) -> spn_status {
    let job = Box::new(
        move |s: &Sampler,
              seeds: &[u64],
              pr: &mut dyn FnMut(&SampleProgress) -> bool,
              t: &CancelToken| {
            // SAFETY: a valid view by the caller's contract; read inside the boundary.
            let size = model_size(s.pipeline(), f.0);
            let img = unsafe { read_view(image, "image", size) }.map_err(Error::from)?;
            (f.1)(s, &img, seeds, pr, t)
        },
    );
    // SAFETY: the caller's contract is sample's.
    unsafe { sample(name, model, params, out.0, out.1, job) }
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
    let f: Upscale = (true, |s, img, seeds, pr, t| {
        s.upscale_size(img, seeds, pr, t)
    });
    // SAFETY: the caller's contract is upscale's.
    unsafe {
        upscale(
            "spn_upscale_size",
            f,
            model,
            image,
            params,
            (out_images, out_count),
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
    let f: Upscale = (false, |s, img, seeds, pr, t| {
        s.upscale_depth(img, seeds, pr, t)
    });
    // SAFETY: the caller's contract is upscale's.
    unsafe {
        upscale(
            "spn_upscale_depth",
            f,
            model,
            image,
            params,
            (out_images, out_count),
        )
    }
}
