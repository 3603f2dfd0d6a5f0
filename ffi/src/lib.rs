//! libspn: the C ABI of spn, documented in `include/spn.h`.
//!
//! Every export runs its body through [`boundary`]: panics and libtorch errors become a status and a
//! thread-local message; nothing unwinds into the host. Handles are checked against registries of live
//! handles, so a freed or foreign handle is an error, not a crash.
#![allow(clippy::missing_safety_doc)]

use spn_core::sampler::{CancelToken, SampleOptions, SampleProgress, Sampler, Samples};
use spn_core::{Error, Pipeline};
use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};
use tch::Tensor;

pub const ABI_VERSION: u32 = 1;

// The layouts spn.h documents for ABI version 1. Appending a field changes these sizes; changing the
// offsets of existing fields is never allowed.
const _: () = assert!(std::mem::size_of::<spn_model_params>() == 12);
const _: () = assert!(std::mem::size_of::<spn_model_info>() == 32);
const _: () = assert!(std::mem::size_of::<spn_sample_params>() == 48);
const _: () = assert!(std::mem::offset_of!(spn_sample_params, progress) == 24);
const _: () = assert!(std::mem::size_of::<spn_image>() == 48);
const _: () = assert!(std::mem::size_of::<spn_image_view>() == 32);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, dead_code)]
pub enum spn_status {
    SPN_OK = 0,
    SPN_ERR_INVALID_ARGUMENT = 1,
    SPN_ERR_IO = 2,
    SPN_ERR_MODEL = 3,
    SPN_ERR_DEVICE = 4,
    SPN_ERR_CANCELLED = 5,
    SPN_ERR_VERSION = 6,
    SPN_ERR_INTERNAL = 7,
    SPN_ERR_BUFFER_TOO_SMALL = 8,
}
use spn_status::*;

/// An error on its way to the caller.
struct Fail(spn_status, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Input(m) if m.contains("CUDA") => SPN_ERR_DEVICE,
            Error::Input(_) | Error::Config(_) | Error::Image { .. } => SPN_ERR_INVALID_ARGUMENT,
            Error::Bundle { .. } | Error::BundleVersion { .. } => SPN_ERR_MODEL,
            Error::Io(_) => SPN_ERR_IO,
            Error::Cancelled => SPN_ERR_CANCELLED,
            Error::Torch(_) | Error::Other(_) => SPN_ERR_INTERNAL,
        };
        Fail(status, e.to_string())
    }
}

fn invalid(msg: impl Into<String>) -> Fail {
    Fail(SPN_ERR_INVALID_ARGUMENT, msg.into())
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The one boundary every fallible export goes through.
fn boundary(name: &str, f: impl FnOnce() -> Result<(), Fail>) -> spn_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_error("");
            SPN_OK
        }
        Ok(Err(Fail(status, msg))) => {
            log::debug!("{name}: {msg}");
            set_error(&msg);
            status
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!("internal error in {name}: {msg}"));
            SPN_ERR_INTERNAL
        }
    }
}

/// Runs a void export without letting a panic escape.
fn quiet(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

// ---- Handles ---------------------------------------------------------------------------------------

/// A loaded model. Its weights are only read after loading, and libtorch allows concurrent reads of
/// tensors (inference on shared weights from many threads; grad mode is per thread).
pub struct SpnModel {
    pipeline: Pipeline,
}
unsafe impl Sync for SpnModel {}
unsafe impl Send for SpnModel {}

pub struct SpnJob {
    token: CancelToken,
}

fn models() -> &'static Mutex<HashSet<usize>> {
    static M: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

fn jobs() -> &'static Mutex<HashSet<usize>> {
    static J: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
    J.get_or_init(Default::default)
}

fn live(reg: &Mutex<HashSet<usize>>, p: usize) -> bool {
    reg.lock().map(|s| s.contains(&p)).unwrap_or(false)
}

/// Boxes a new handle and records it as live.
fn register<T>(reg: &Mutex<HashSet<usize>>, value: T) -> Result<*mut T, Fail> {
    let b = Box::into_raw(Box::new(value));
    reg.lock()
        .map_err(|_| invalid("registry poisoned"))?
        .insert(b as usize);
    Ok(b)
}

/// Frees a handle if it is live; NULL, freed and foreign pointers are ignored.
unsafe fn unregister<T>(reg: &Mutex<HashSet<usize>>, p: *mut T) {
    if p.is_null() {
        return;
    }
    if reg
        .lock()
        .map(|mut s| s.remove(&(p as usize)))
        .unwrap_or(false)
    {
        drop(Box::from_raw(p));
    }
}

unsafe fn model_ref<'a>(m: *const SpnModel) -> Result<&'a SpnModel, Fail> {
    if m.is_null() {
        return Err(invalid("model is NULL"));
    }
    if !live(models(), m as usize) {
        return Err(invalid(
            "invalid model handle (freed, or not from spn_model_load)",
        ));
    }
    Ok(&*m)
}

unsafe fn job_ref<'a>(j: *const SpnJob) -> Result<Option<&'a SpnJob>, Fail> {
    if j.is_null() {
        return Ok(None);
    }
    if !live(jobs(), j as usize) {
        return Err(invalid(
            "invalid job handle (freed, or not from spn_job_new)",
        ));
    }
    Ok(Some(&*j))
}

/// Reads a caller struct that starts with `struct_size`: the fields the caller knows, defaults for the
/// rest (appended by newer headers than the caller's).
unsafe fn read_sized<T: Copy>(p: *const T, default: T, what: &str) -> Result<T, Fail> {
    if p.is_null() {
        return Ok(default);
    }
    let size = *(p as *const u32) as usize;
    if size < 8 {
        return Err(invalid(format!(
            "{what}.struct_size is {size}: fill it with its _init function"
        )));
    }
    let mut out = default;
    let n = size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, n);
    // Keep our own notion of the size.
    *(&mut out as *mut T as *mut u32) = std::mem::size_of::<T>() as u32;
    Ok(out)
}

// ---- Version and errors ----------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn spn_abi_version() -> u32 {
    ABI_VERSION
}

#[no_mangle]
pub extern "C" fn spn_version_string() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

#[no_mangle]
pub extern "C" fn spn_init(abi_version: u32) -> spn_status {
    boundary("spn_init", || {
        if abi_version > ABI_VERSION {
            return Err(Fail(
                SPN_ERR_VERSION,
                format!("the caller needs ABI version {abi_version}; this libspn has version {ABI_VERSION}: install a newer libspn"),
            ));
        }
        if abi_version == 0 {
            return Err(invalid(
                "ABI version 0 does not exist: pass SPN_ABI_VERSION",
            ));
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn spn_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[no_mangle]
pub extern "C" fn spn_status_string(status: c_int) -> *const c_char {
    let s: &'static str = match status {
        0 => "SPN_OK\0",
        1 => "SPN_ERR_INVALID_ARGUMENT\0",
        2 => "SPN_ERR_IO\0",
        3 => "SPN_ERR_MODEL\0",
        4 => "SPN_ERR_DEVICE\0",
        5 => "SPN_ERR_CANCELLED\0",
        6 => "SPN_ERR_VERSION\0",
        7 => "SPN_ERR_INTERNAL\0",
        8 => "SPN_ERR_BUFFER_TOO_SMALL\0",
        _ => "SPN_ERR_UNKNOWN\0",
    };
    s.as_ptr() as *const c_char
}

// ---- Logging ---------------------------------------------------------------------------------------

type LogFn = extern "C" fn(*mut c_void, c_int, *const c_char);

struct HostLogger {
    sink: Mutex<Option<(LogFn, usize)>>,
}

impl log::Log for HostLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let sink = self.sink.lock().ok().and_then(|s| *s);
        if let Some((f, user)) = sink {
            let level = match record.level() {
                log::Level::Error => 1,
                log::Level::Warn => 2,
                log::Level::Info => 3,
                _ => 4,
            };
            if let Ok(msg) = CString::new(format!("{}", record.args()).replace('\0', " ")) {
                f(user as *mut c_void, level, msg.as_ptr());
            }
        }
    }
    fn flush(&self) {}
}

fn logger() -> &'static HostLogger {
    static L: OnceLock<HostLogger> = OnceLock::new();
    L.get_or_init(|| HostLogger {
        sink: Mutex::new(None),
    })
}

#[no_mangle]
pub extern "C" fn spn_set_log_callback(callback: Option<LogFn>, user_data: *mut c_void) {
    quiet(|| {
        let l = logger();
        if log::set_logger(l).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        if let Ok(mut s) = l.sink.lock() {
            *s = callback.map(|f| (f, user_data as usize));
        }
    })
}

// ---- Models ----------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
pub struct spn_model_params {
    pub struct_size: u32,
    pub device: c_int,
    pub cuda_index: i32,
}

impl Default for spn_model_params {
    fn default() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>() as u32,
            device: 0,
            cuda_index: 0,
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn spn_model_params_init(params: *mut spn_model_params) {
    quiet(|| {
        if !params.is_null() {
            *params = spn_model_params::default();
        }
    })
}

unsafe fn c_path(p: *const c_char, what: &str) -> Result<Option<std::path::PathBuf>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    let s = CStr::from_ptr(p)
        .to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))?;
    Ok(Some(s.into()))
}

#[no_mangle]
pub unsafe extern "C" fn spn_model_load(
    path: *const c_char,
    params: *const spn_model_params,
    out_model: *mut *mut SpnModel,
) -> spn_status {
    boundary("spn_model_load", || {
        if out_model.is_null() {
            return Err(invalid("out_model is NULL"));
        }
        let params = read_sized(params, spn_model_params::default(), "spn_model_params")?;
        let path = match c_path(path, "path")? {
            Some(p) => p,
            None => spn_core::default_model_path().ok_or_else(|| {
                Fail(
                    SPN_ERR_MODEL,
                    "no bundled default model found; pass a path or set SPN_MODEL".into(),
                )
            })?,
        };
        let device = match params.device {
            0 => tch::Device::cuda_if_available(),
            1 => tch::Device::Cpu,
            2 => {
                let n = tch::Cuda::device_count();
                if params.cuda_index < 0 || params.cuda_index as i64 >= n {
                    return Err(Fail(
                        SPN_ERR_DEVICE,
                        format!(
                            "CUDA device {} requested but {n} CUDA device(s) are available",
                            params.cuda_index
                        ),
                    ));
                }
                tch::Device::Cuda(params.cuda_index as usize)
            }
            d => return Err(invalid(format!("unknown device {d}"))),
        };
        if !path.exists() {
            return Err(Fail(
                SPN_ERR_MODEL,
                format!("model file {} does not exist", path.display()),
            ));
        }
        let pipeline = Pipeline::load(&path, device)?;
        log::info!("loaded {} on {device:?}", path.display());
        *out_model = register(models(), SpnModel { pipeline })?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn spn_model_free(model: *mut SpnModel) {
    quiet(|| unregister(models(), model))
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct spn_model_info {
    pub struct_size: u32,
    pub width: u32,
    pub height: u32,
    pub scale: u32,
    pub msb_bits: u32,
    pub stages: u32,
    pub parameters: u64,
}

#[no_mangle]
pub unsafe extern "C" fn spn_model_get_info(
    model: *const SpnModel,
    info: *mut spn_model_info,
) -> spn_status {
    boundary("spn_model_get_info", || {
        let m = model_ref(model)?;
        if info.is_null() {
            return Err(invalid("info is NULL"));
        }
        let size = (*info).struct_size as usize;
        if size < 8 {
            return Err(invalid(
                "spn_model_info.struct_size must be set to sizeof(spn_model_info)",
            ));
        }
        let c = &m.pipeline.config;
        let full = spn_model_info {
            struct_size: size.min(std::mem::size_of::<spn_model_info>()) as u32,
            width: c.width as u32,
            height: c.height as u32,
            scale: c.scale as u32,
            msb_bits: c.msb_bits.unwrap_or(0),
            stages: m.pipeline.stages.len() as u32,
            parameters: m.pipeline.parameter_count(None) as u64,
        };
        // Write only the fields the caller's struct has.
        let n = size.min(std::mem::size_of::<spn_model_info>());
        std::ptr::copy_nonoverlapping(&full as *const _ as *const u8, info as *mut u8, n);
        Ok(())
    })
}

// ---- Jobs ------------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn spn_job_new(out_job: *mut *mut SpnJob) -> spn_status {
    boundary("spn_job_new", || {
        if out_job.is_null() {
            return Err(invalid("out_job is NULL"));
        }
        *out_job = register(
            jobs(),
            SpnJob {
                token: CancelToken::new(),
            },
        )?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn spn_job_cancel(job: *mut SpnJob) -> spn_status {
    boundary("spn_job_cancel", || {
        // Hold the registry lock so the job cannot be freed while it is being cancelled.
        let reg = jobs().lock().map_err(|_| invalid("registry poisoned"))?;
        if job.is_null() || !reg.contains(&(job as usize)) {
            return Err(invalid(
                "invalid job handle (NULL, freed, or not from spn_job_new)",
            ));
        }
        (*job).token.cancel();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn spn_job_free(job: *mut SpnJob) {
    quiet(|| unregister(jobs(), job))
}

// ---- Images ----------------------------------------------------------------------------------------

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

/// Largest side accepted from a caller: far above any model, small enough that sizes never overflow.
const MAX_SIDE: u32 = 1 << 15;

/// For a 4-channel view (already checked by `read_view`), where alpha >= 128, as an `(H, W)` bool tensor.
unsafe fn read_opaque(v: *const spn_image_view) -> Result<Option<Tensor>, Fail> {
    let v = &*v;
    if v.channels != 4 {
        return Ok(None);
    }
    let (w, h) = (v.width as usize, v.height as usize);
    let mut out = vec![false; w * h];
    for y in 0..h {
        let src = std::slice::from_raw_parts(v.data.add(y * v.stride), w * 4);
        for x in 0..w {
            out[y * w + x] = src[x * 4 + 3] >= 128;
        }
    }
    Tensor::f_from_slice(&out)
        .and_then(|t| t.f_view([h as i64, w as i64]))
        .map(Some)
        .map_err(|e| Fail(SPN_ERR_INTERNAL, e.to_string()))
}

/// Reads a caller image into a `(3, H, W)` uint8 tensor (RGBA composited over white, gray replicated).
unsafe fn read_view(v: *const spn_image_view, what: &str) -> Result<Tensor, Fail> {
    if v.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    let v = &*v;
    if v.data.is_null() {
        return Err(invalid(format!("{what}.data is NULL")));
    }
    if v.width == 0 || v.height == 0 || v.width > MAX_SIDE || v.height > MAX_SIDE {
        return Err(invalid(format!(
            "{what} is {}x{}: sides must be in 1..={MAX_SIDE}",
            v.width, v.height
        )));
    }
    if !matches!(v.channels, 1 | 3 | 4) {
        return Err(invalid(format!(
            "{what} has {} channels: use 1, 3 or 4",
            v.channels
        )));
    }
    let row = v.width as usize * v.channels as usize;
    if v.stride < row {
        return Err(invalid(format!(
            "{what}.stride {} is less than width * channels = {row}",
            v.stride
        )));
    }
    let (w, h) = (v.width as usize, v.height as usize);
    let mut out = vec![0u8; 3 * w * h];
    for y in 0..h {
        let src = std::slice::from_raw_parts(v.data.add(y * v.stride), row);
        for x in 0..w {
            let px = &src[x * v.channels as usize..(x + 1) * v.channels as usize];
            let rgb = match v.channels {
                1 => [px[0]; 3],
                3 => [px[0], px[1], px[2]],
                _ => {
                    let a = px[3] as u32;
                    let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                    [mix(px[0]), mix(px[1]), mix(px[2])]
                }
            };
            for c in 0..3 {
                out[c * w * h + y * w + x] = rgb[c];
            }
        }
    }
    Tensor::f_from_slice(&out)
        .and_then(|t| t.f_view([3, h as i64, w as i64]))
        .map_err(|e| Fail(SPN_ERR_INTERNAL, e.to_string()))
}

fn to_images(s: &Samples) -> Result<Vec<spn_image>, Fail> {
    let n = s.images.size()[0];
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = s
            .images
            .f_get(i)
            .and_then(|t| t.f_permute([1, 2, 0]))
            .and_then(|t| t.f_contiguous())
            .map_err(|e| Fail(SPN_ERR_INTERNAL, e.to_string()))?;
        let (h, w) = (t.size()[0] as u32, t.size()[1] as u32);
        let v = Vec::<u8>::try_from(
            t.f_flatten(0, -1)
                .map_err(|e| Fail(SPN_ERR_INTERNAL, e.to_string()))?,
        )
        .map_err(|e| Fail(SPN_ERR_INTERNAL, e.to_string()))?;
        let data = Box::into_raw(v.into_boxed_slice()) as *mut u8;
        out.push(spn_image {
            width: w,
            height: h,
            channels: 3,
            stride: 3 * w as usize,
            data,
            seed: s.seeds[i as usize],
            bits: s.bits[i as usize],
        });
    }
    Ok(out)
}

#[no_mangle]
pub unsafe extern "C" fn spn_images_free(images: *mut spn_image, count: u32) {
    quiet(|| {
        if images.is_null() {
            return;
        }
        let v = Vec::from_raw_parts(images, count as usize, count as usize);
        for im in &v {
            if !im.data.is_null() {
                let len = im.stride * im.height as usize;
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    im.data, len,
                )));
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn spn_image_write_png(
    image: *const spn_image,
    path: *const c_char,
) -> spn_status {
    boundary("spn_image_write_png", || {
        if image.is_null() {
            return Err(invalid("image is NULL"));
        }
        let path = c_path(path, "path")?.ok_or_else(|| invalid("path is NULL"))?;
        let im = &*image;
        if im.data.is_null() || im.channels != 3 || im.stride < 3 * im.width as usize {
            return Err(invalid("not an image returned by libspn"));
        }
        let mut buf = Vec::with_capacity(3 * (im.width * im.height) as usize);
        for y in 0..im.height as usize {
            buf.extend_from_slice(std::slice::from_raw_parts(
                im.data.add(y * im.stride),
                3 * im.width as usize,
            ));
        }
        let img = image::RgbImage::from_raw(im.width, im.height, buf)
            .ok_or_else(|| invalid("bad image size"))?;
        spn_core::data::save_png(&img, &path).map_err(|e| Fail(SPN_ERR_IO, e.to_string()))?;
        Ok(())
    })
}

// ---- Sampling --------------------------------------------------------------------------------------

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

#[no_mangle]
pub unsafe extern "C" fn spn_sample_params_init(params: *mut spn_sample_params) {
    quiet(|| {
        if !params.is_null() {
            *params = spn_sample_params::default();
        }
    })
}

/// Upper bound on images per call, so a typo cannot allocate the machine away.
const MAX_COUNT: u32 = 1 << 20;
/// Upper bound on the bytes of images one call returns (they are all held in memory at once).
const MAX_OUTPUT_BYTES: u64 = 4 << 30;

/// Shared body of the sampling calls.
unsafe fn sample(
    name: &str,
    model: *const SpnModel,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
    job: impl FnOnce(
        &Sampler,
        &[u64],
        &mut dyn FnMut(&SampleProgress) -> bool,
        &CancelToken,
    ) -> spn_core::Result<Samples>,
) -> spn_status {
    boundary(name, || {
        let m = model_ref(model)?;
        if out_images.is_null() || out_count.is_null() {
            return Err(invalid("out_images and out_count must not be NULL"));
        }
        let p = read_sized(params, spn_sample_params::default(), "spn_sample_params")?;
        if p.count == 0 || p.count > MAX_COUNT {
            return Err(invalid(format!(
                "count must be in 1..={MAX_COUNT}, got {}",
                p.count
            )));
        }
        // Every image is returned at once; past this, the host should call again with a later seed.
        let cfg = &m.pipeline.config;
        let bytes = p.count as u64 * (cfg.height * cfg.width * 3) as u64;
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
        let token = match job_ref(p.job)? {
            Some(j) => j.token.clone(),
            None => CancelToken::new(),
        };
        let options = SampleOptions {
            temperature: p.temperature as f64,
            batch_size: p.batch_size as usize,
            ..Default::default()
        };
        let sampler = Sampler::new(&m.pipeline, options)?;
        let seeds: Vec<u64> = (0..p.count as u64)
            .map(|i| p.seed.wrapping_add(i))
            .collect();
        let (cb, user) = (p.progress, p.user_data);
        let mut progress = |pr: &SampleProgress| match cb {
            Some(f) => f(user, pr.done, pr.total) != 0,
            None => true,
        };
        let samples = job(&sampler, &seeds, &mut progress, &token)?;
        let images = to_images(&samples)?;
        let n = images.len() as u32;
        let mut images = std::mem::ManuallyDrop::new(images);
        images.shrink_to_fit();
        *out_images = images.as_mut_ptr();
        *out_count = n;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn spn_generate(
    model: *const SpnModel,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    sample(
        "spn_generate",
        model,
        params,
        out_images,
        out_count,
        |s, seeds, pr, t| s.generate(seeds, pr, t),
    )
}

#[no_mangle]
pub unsafe extern "C" fn spn_complete(
    model: *const SpnModel,
    image: *const spn_image_view,
    mask: *const spn_image_view,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    // Read the inputs inside the boundary of the shared body.
    sample(
        "spn_complete",
        model,
        params,
        out_images,
        out_count,
        |s, seeds, pr, t| {
            let img = read_view(image, "image").map_err(fail_to_error)?;
            let m = read_view(mask, "mask").map_err(fail_to_error)?;
            if m.size() != img.size() {
                return Err(Error::Input(format!(
                    "mask is {}x{} but the image is {}x{}",
                    m.size()[2],
                    m.size()[1],
                    img.size()[2],
                    img.size()[1]
                )));
            }
            let mut known = m.f_select(0, 0)?.f_gt(127)?;
            // Transparent mask pixels are unknown, whatever their colour.
            if let Some(opaque) = read_opaque(mask).map_err(fail_to_error)? {
                known = known.f_logical_and(&opaque)?;
            }
            s.complete(&img, &known, seeds, pr, t)
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn spn_upscale_size(
    model: *const SpnModel,
    image: *const spn_image_view,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    sample(
        "spn_upscale_size",
        model,
        params,
        out_images,
        out_count,
        |s, seeds, pr, t| {
            let img = read_view(image, "image").map_err(fail_to_error)?;
            s.upscale_size(&img, seeds, pr, t)
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn spn_upscale_depth(
    model: *const SpnModel,
    image: *const spn_image_view,
    params: *const spn_sample_params,
    out_images: *mut *mut spn_image,
    out_count: *mut u32,
) -> spn_status {
    sample(
        "spn_upscale_depth",
        model,
        params,
        out_images,
        out_count,
        |s, seeds, pr, t| {
            let img = read_view(image, "image").map_err(fail_to_error)?;
            s.upscale_depth(&img, seeds, pr, t)
        },
    )
}

fn fail_to_error(f: Fail) -> Error {
    Error::Input(f.1)
}

// ---- Scoring ---------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn spn_score(
    model: *const SpnModel,
    image: *const spn_image_view,
    out_total_bits: *mut f64,
    per_subpixel: *mut f32,
    capacity: usize,
) -> spn_status {
    boundary("spn_score", || {
        let m = model_ref(model)?;
        if out_total_bits.is_null() {
            return Err(invalid("out_total_bits is NULL"));
        }
        let img = read_view(image, "image")?;
        let (h, w) = (img.size()[1], img.size()[2]);
        let needed = (h * w * 3) as usize;
        if !per_subpixel.is_null() && capacity < needed {
            return Err(Fail(
                SPN_ERR_BUFFER_TOO_SMALL,
                format!("per_subpixel holds {capacity} floats; {needed} needed"),
            ));
        }
        let rgb = spn_core::data::from_tensor(&img)?;
        let r = spn_core::eval::score(&m.pipeline, &rgb)?;
        if !per_subpixel.is_null() {
            std::ptr::copy_nonoverlapping(r.bits.as_ptr(), per_subpixel, r.bits.len());
        }
        *out_total_bits = r.total_bits;
        Ok(())
    })
}
