//! libspn_torch: the libtorch engines behind the table of `spn::backend` (docs/design.md section 9). libspn
//! loads this library at run time when a host asks for CUDA (or for libtorch on the CPU, the reference), so
//! that libspn itself links no libtorch. Every entry catches panics and turns errors into a status and a
//! message. The entries taking pointers are `unsafe extern "C" fn`s whose contract is the table's
//! (`spn::backend`): handles made by this library and still alive, arrays of the sizes given, one thread at a
//! time per decoder. libspn (`ffi/src/backend.rs`) is their only caller and keeps it.
use spn_core::backend::{
    spn_backend_v1, spn_slice_batch, ERR_DEVICE, ERR_MODEL, ERR_OTHER, OK, TORCH_CPU, VERSION,
};
use spn_core::decode::{Decoding, Engine, Network, PreparedSlice, SliceBatch, SliceDecoding};
use spn_core::{Error, Pipeline};
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs `f`, turning an error or a panic into a status and the thread's message.
fn guard(f: impl FnOnce() -> Result<(), (i32, String)>) -> i32 {
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err((ERR_OTHER, format!("internal error (panic): {msg}")))
    });
    match r {
        Ok(()) => OK,
        Err((status, msg)) => {
            let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
            LAST_ERROR.with(|e| *e.borrow_mut() = c);
            status
        }
    }
}

fn other(e: Error) -> (i32, String) {
    (ERR_OTHER, e.to_string())
}

/// A loaded pipeline and its engine. The engine borrows the pipeline, which is boxed (a stable address) and
/// dropped after it.
struct Model {
    engine: Option<Box<dyn Engine + 'static>>,
    pipeline: *mut Pipeline,
    config_json: CString,
}

impl Drop for Model {
    fn drop(&mut self) {
        self.engine = None;
        // SAFETY: `pipeline` came from Box::into_raw in `load`, and nothing borrows it any more (the engine
        // was just dropped, and libspn frees prepared slices and decoders before their model).
        drop(unsafe { Box::from_raw(self.pipeline) });
    }
}

impl Model {
    fn engine(&self) -> Result<&dyn Engine, (i32, String)> {
        self.engine
            .as_deref()
            .ok_or_else(|| (ERR_OTHER, "model already freed".into()))
    }
}

/// A prepared slice and the decoders made from it, with the logits buffer each call hands back.
struct Prepared(Box<dyn PreparedSlice + 'static>);
struct Decoder {
    dec: Box<dyn SliceDecoding + 'static>,
    logits: Vec<f32>,
}

/// The batch a table call describes.
///
/// # Safety
/// `input` points to a batch whose arrays hold the sizes it gives (libspn's contract).
unsafe fn batch<'a>(input: *const spn_slice_batch) -> SliceBatch<'a> {
    // SAFETY: the caller's contract.
    let i = unsafe { &*input };
    let n = i.b * i.h * i.w;
    // SAFETY: the arrays hold these sizes (the caller's contract).
    unsafe {
        SliceBatch {
            b: i.b,
            h: i.h,
            w: i.w,
            cin: i.cin,
            cond: std::slice::from_raw_parts(i.cond, n * i.cin),
            ks: std::slice::from_raw_parts(i.ks, i.b),
            values: std::slice::from_raw_parts(i.values, n),
        }
    }
}

extern "C" fn cuda_devices() -> i32 {
    catch_unwind(|| tch::Cuda::device_count() as i32).unwrap_or(0)
}

extern "C" fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

unsafe extern "C" fn load(path: *const c_char, cuda_index: i32, out: *mut *mut c_void) -> i32 {
    guard(|| {
        // SAFETY: a NUL-terminated path (libspn's contract).
        let path = unsafe { CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned();
        let (device, decoding) = match cuda_index {
            TORCH_CPU => (tch::Device::Cpu, Decoding::IncrementalTensor),
            i if i >= 0 && (i as i64) < tch::Cuda::device_count() => {
                (tch::Device::Cuda(i as usize), Decoding::Incremental)
            }
            i => {
                return Err((
                    ERR_DEVICE,
                    format!(
                        "CUDA device {i} requested but libtorch sees {} CUDA device(s)",
                        tch::Cuda::device_count()
                    ),
                ))
            }
        };
        let pipeline = Pipeline::load(std::path::Path::new(&path), device)
            .map_err(|e| (ERR_MODEL, e.to_string()))?;
        let config_json = serde_json::to_string(pipeline.config())
            .ok()
            .and_then(|j| CString::new(j).ok())
            .ok_or_else(|| (ERR_OTHER, "the config does not serialise".to_string()))?;
        let pipeline = Box::into_raw(Box::new(pipeline));
        let mut model = Model {
            engine: None,
            pipeline,
            config_json,
        };
        // SAFETY: the pipeline lives until `model` is dropped, which drops the engine first.
        let p: &'static Pipeline = unsafe { &*pipeline };
        model.engine = Some(p.engine(decoding, true).map_err(other)?);
        // SAFETY: `out` is writable (libspn's contract).
        unsafe { *out = Box::into_raw(Box::new(model)) as *mut c_void };
        Ok(())
    })
}

unsafe extern "C" fn free(model: *mut c_void) {
    if !model.is_null() {
        // SAFETY: made by `load`, freed once (libspn's contract).
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(model as *mut Model) })
        }));
    }
}

unsafe extern "C" fn engine_name(model: *const c_void) -> *const c_char {
    // SAFETY: a live model (libspn's contract).
    let m = unsafe { &*(model as *const Model) };
    match m.engine.as_ref().map(|e| e.name()) {
        Some("tensor") => c"tensor (libtorch)".as_ptr(),
        Some("naive") => c"naive (libtorch)".as_ptr(),
        _ => c"libtorch".as_ptr(),
    }
}

unsafe extern "C" fn prepare(
    model: *const c_void,
    si: usize,
    input: *const spn_slice_batch,
    out: *mut *mut c_void,
) -> i32 {
    guard(|| {
        // SAFETY: a live model and a valid batch (libspn's contract).
        let (m, input) = unsafe { (&*(model as *const Model), batch(input)) };
        let p = m.engine()?.prepare(si, &input).map_err(other)?;
        // SAFETY: the prepared slice borrows the model's engine, which libspn keeps alive until this
        // prepared slice is freed.
        let p: Box<dyn PreparedSlice + 'static> = unsafe { std::mem::transmute(p) };
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(Box::new(Prepared(p))) as *mut c_void };
        Ok(())
    })
}

unsafe extern "C" fn prepared_free(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: made by `prepare`, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(p as *mut Prepared) })
        }));
    }
}

unsafe extern "C" fn decoder(
    prepared: *const c_void,
    start: usize,
    len: usize,
    out: *mut *mut c_void,
) -> i32 {
    guard(|| {
        // SAFETY: a live prepared slice.
        let p = unsafe { &*(prepared as *const Prepared) };
        let dec = p.0.decoder(start..start + len).map_err(other)?;
        // SAFETY: the decoder borrows the prepared slice, which libspn frees after it.
        let dec: Box<dyn SliceDecoding + 'static> = unsafe { std::mem::transmute(dec) };
        let d = Decoder {
            dec,
            logits: Vec::new(),
        };
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(Box::new(d)) as *mut c_void };
        Ok(())
    })
}

unsafe extern "C" fn decoder_free(d: *mut c_void) {
    if !d.is_null() {
        // SAFETY: made by `decoder`, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(d as *mut Decoder) })
        }));
    }
}

unsafe extern "C" fn features(d: *mut c_void, pos: usize) -> i32 {
    // SAFETY: a live decoder, used by one thread at a time.
    let d = unsafe { &mut *(d as *mut Decoder) };
    guard(|| d.dec.features(pos).map_err(other))
}

unsafe extern "C" fn channel_logits(
    d: *mut c_void,
    ch: usize,
    chosen: *const [i64; 3],
    n: usize,
    out: *mut *const f32,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: a live decoder, used by one thread at a time; `chosen` holds `n` pixels.
    let (d, chosen) = unsafe {
        (
            &mut *(d as *mut Decoder),
            std::slice::from_raw_parts(chosen, n),
        )
    };
    guard(|| {
        let l = d.dec.channel_logits(ch, chosen).map_err(other)?;
        d.logits.clear();
        d.logits.extend_from_slice(l);
        // SAFETY: both are writable; the buffer lives until the decoder's next call.
        unsafe {
            *out = d.logits.as_ptr();
            *out_len = d.logits.len();
        }
        Ok(())
    })
}

unsafe extern "C" fn commit(d: *mut c_void, pos: usize, values: *const [i64; 3], n: usize) -> i32 {
    // SAFETY: a live decoder; `values` holds `n` pixels.
    let (d, values) = unsafe {
        (
            &mut *(d as *mut Decoder),
            std::slice::from_raw_parts(values, n),
        )
    };
    guard(|| d.dec.commit(pos, values).map_err(other))
}

unsafe extern "C" fn score(
    model: *const c_void,
    si: usize,
    input: *const spn_slice_batch,
    out: *mut f32,
    len: usize,
) -> i32 {
    guard(|| {
        // SAFETY: a live model and a valid batch; `out` holds `len` floats.
        let (m, input, out) = unsafe {
            (
                &*(model as *const Model),
                batch(input),
                std::slice::from_raw_parts_mut(out, len),
            )
        };
        let lp = m.engine()?.score(si, &input).map_err(other)?;
        if lp.len() != len {
            return Err((ERR_OTHER, format!("{} scores for {len} places", lp.len())));
        }
        out.copy_from_slice(&lp);
        Ok(())
    })
}

unsafe extern "C" fn config_json(model: *const c_void) -> *const c_char {
    // SAFETY: a live model (libspn's contract); the string lives as long as it.
    unsafe { (*(model as *const Model)).config_json.as_ptr() }
}

static TABLE: spn_backend_v1 = spn_backend_v1 {
    struct_size: std::mem::size_of::<spn_backend_v1>() as u32,
    version: VERSION,
    cuda_devices,
    last_error,
    load,
    free,
    engine_name,
    prepare,
    prepared_free,
    decoder,
    decoder_free,
    features,
    channel_logits,
    commit,
    score,
    config_json,
};

/// The one entry point (`spn::backend::ENTRY_POINT`).
#[no_mangle]
pub extern "C" fn spn_backend_v1() -> *const spn_backend_v1 {
    &TABLE
}
