//! The boundary between libspn and an engine library it loads at run time (the libtorch backend,
//! `ffi/torch`): one exported entry point, [`ENTRY_POINT`], returns a table of C functions, versioned like the
//! public ABI (struct size first, fields only appended), after ggml's dynamically loaded backends and
//! docs/design.md section 9. Everything crossing it is plain data: the sampler's slice batches as host arrays,
//! logits back. Errors cross as a status and a message (`last_error`), never as panics or C++ exceptions.
//!
//! Objects and their lifetimes: a model (from `load`) outlives the prepared slices made from it, and a
//! prepared slice outlives its decoders; libspn frees them in that order.
#![allow(non_camel_case_types)]
use std::ffi::{c_char, c_void};

/// The symbol every backend exports: `extern "C" fn() -> *const spn_backend_v1`.
pub const ENTRY_POINT: &[u8] = b"spn_backend_v1";
/// Bumped when a field's meaning changes (never for an appended field).
pub const VERSION: u32 = 1;

/// Statuses of the table's calls.
pub const OK: i32 = 0;
/// The model file is missing, damaged or not a model.
pub const ERR_MODEL: i32 = 1;
/// The device asked for is not there.
pub const ERR_DEVICE: i32 = 2;
/// Anything else (a failure inside libtorch, out of memory).
pub const ERR_OTHER: i32 = 3;

/// `cuda_index` for `load`: libtorch on the CPU, the reference engine (SPN_DEVICE_TORCH_CPU).
pub const TORCH_CPU: i32 = -1;

/// `decode::SliceBatch` across the boundary.
#[repr(C)]
pub struct spn_slice_batch {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    /// `(b, h * w, cin)`.
    pub cond: *const f32,
    /// `(b,)`.
    pub ks: *const usize,
    /// `(b, h * w)` pixels of three integer levels.
    pub values: *const [i64; 3],
}

/// What a backend offers. Every call returns a status; on failure `last_error` gives the message (valid on the
/// calling thread until its next call).
#[repr(C)]
pub struct spn_backend_v1 {
    pub struct_size: u32,
    pub version: u32,
    /// CUDA devices libtorch sees (0 without a GPU or a CUDA driver).
    pub cuda_devices: unsafe extern "C" fn() -> i32,
    pub last_error: unsafe extern "C" fn() -> *const c_char,
    /// Loads the bundle at `path` (NUL-terminated) on CUDA device `cuda_index`, or [`TORCH_CPU`].
    pub load:
        unsafe extern "C" fn(path: *const c_char, cuda_index: i32, out: *mut *mut c_void) -> i32,
    pub free: unsafe extern "C" fn(model: *mut c_void),
    /// The engine's name, a static string.
    pub engine_name: unsafe extern "C" fn(model: *const c_void) -> *const c_char,
    /// `Engine::prepare` of stage `si`.
    pub prepare: unsafe extern "C" fn(
        model: *const c_void,
        si: usize,
        input: *const spn_slice_batch,
        out: *mut *mut c_void,
    ) -> i32,
    pub prepared_free: unsafe extern "C" fn(prepared: *mut c_void),
    /// A decoder of images `start..start + len` of a prepared slice.
    pub decoder: unsafe extern "C" fn(
        prepared: *const c_void,
        start: usize,
        len: usize,
        out: *mut *mut c_void,
    ) -> i32,
    pub decoder_free: unsafe extern "C" fn(decoder: *mut c_void),
    pub features: unsafe extern "C" fn(decoder: *mut c_void, pos: usize) -> i32,
    /// Logits `(n, L)` of channel `ch`: `*out` stays valid until the decoder's next call.
    pub channel_logits: unsafe extern "C" fn(
        decoder: *mut c_void,
        ch: usize,
        chosen: *const [i64; 3],
        n: usize,
        out: *mut *const f32,
        out_len: *mut usize,
    ) -> i32,
    pub commit: unsafe extern "C" fn(
        decoder: *mut c_void,
        pos: usize,
        values: *const [i64; 3],
        n: usize,
    ) -> i32,
    /// `Engine::score` of stage `si` into `out`, `(b, h * w, 3)` floats.
    pub score: unsafe extern "C" fn(
        model: *const c_void,
        si: usize,
        input: *const spn_slice_batch,
        out: *mut f32,
        len: usize,
    ) -> i32,
    /// The model's `PipelineConfig` as JSON (NUL-terminated, valid while the model lives), so that libspn
    /// need not read the bundle a second time.
    pub config_json: unsafe extern "C" fn(model: *const c_void) -> *const c_char,
}
