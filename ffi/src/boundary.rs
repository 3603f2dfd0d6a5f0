//! The one boundary between the host and Rust: statuses, the per-thread error message, panic capture, and
//! the reading of caller-sized structs. Every fallible export runs its body through [`boundary`].
use spn_core::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

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
pub use spn_status::*;

/// An error on its way to the caller.
pub struct Fail(pub spn_status, pub String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Input(m) if m.contains("CUDA") => SPN_ERR_DEVICE,
            Error::Input(_) | Error::Config(_) | Error::Image { .. } => SPN_ERR_INVALID_ARGUMENT,
            Error::Bundle { .. } | Error::BundleVersion { .. } => SPN_ERR_MODEL,
            Error::Io(_) => SPN_ERR_IO,
            Error::Cancelled => SPN_ERR_CANCELLED,
            _ => SPN_ERR_INTERNAL,
        };
        Fail(status, e.to_string())
    }
}

impl From<Fail> for Error {
    /// For errors raised inside a core callback (reading a view while sampling).
    fn from(f: Fail) -> Self {
        Error::Input(f.1)
    }
}

pub fn invalid(msg: impl Into<String>) -> Fail {
    Fail(SPN_ERR_INVALID_ARGUMENT, msg.into())
}

pub fn internal(e: impl std::fmt::Display) -> Fail {
    Fail(SPN_ERR_INTERNAL, e.to_string())
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Replaces this thread's message. Only failures set it: spn.h promises the message of the last failed call.
fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Calls inside libspn right now: a panic on any of their threads (helper threads included) is reported
/// through the status and the log callback, never printed to the host's stderr.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if INSIDE.load(Ordering::SeqCst) > 0 {
                log::error!("libspn panicked: {info}");
            } else {
                previous(info)
            }
        }));
    });
}

/// Runs `f` as one call of the ABI: no panic escapes, failures become a status and this thread's message.
pub fn boundary(name: &str, f: impl FnOnce() -> Result<(), Fail>) -> spn_status {
    install_panic_hook();
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(f));
    INSIDE.fetch_sub(1, Ordering::SeqCst);
    match result {
        Ok(Ok(())) => SPN_OK,
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
pub fn quiet(f: impl FnOnce()) {
    let _ = boundary("", || {
        f();
        Ok(())
    });
}

/// Reads a caller struct that starts with `struct_size`: the fields the caller knows, defaults for the
/// rest (appended by newer headers than the caller's). `field_ends` lists where each field of `T` ends; a
/// size that ends inside a field is refused, so a partial pointer is never read.
///
/// # Safety
/// `p` is NULL or points to at least `struct_size` readable bytes (spn.h's rule for these structs).
pub unsafe fn read_sized<T: Copy>(
    p: *const T,
    default: T,
    field_ends: &[usize],
    what: &str,
) -> Result<T, Fail> {
    if p.is_null() {
        return Ok(default);
    }
    // SAFETY: every such struct starts with a u32 struct_size, and `p` is non-null (the caller's promise).
    let size = unsafe { std::ptr::read_unaligned(p as *const u32) } as usize;
    let full = std::mem::size_of::<T>();
    if size < full && !field_ends.contains(&size) {
        return Err(invalid(format!(
            "{what}.struct_size is {size}, which ends inside a field: fill it with its _init function"
        )));
    }
    let mut out = default;
    let n = size.min(full);
    // SAFETY: the caller's struct has `size` >= n readable bytes; `out` is a distinct local of n or more
    // bytes, and T is plain data (Copy, repr(C)) for which any prefix written over a default is valid, since
    // the prefix ends on a field boundary.
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, n) };
    // SAFETY: `out` starts with its u32 struct_size; keep our own notion of the size.
    unsafe { std::ptr::write_unaligned(&mut out as *mut T as *mut u32, full as u32) };
    Ok(out)
}

/// A caller's NUL-terminated UTF-8 path (NULL: none).
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
pub unsafe fn c_path(p: *const c_char, what: &str) -> Result<Option<std::path::PathBuf>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract (spn.h).
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))?;
    Ok(Some(s.into()))
}

/// 1: the first ABI. 2: `spn_mask_known` added (nothing else changed). 3: the sampling calls take any size;
/// `spn_sample_params` gains width, height, overlap and keep_alpha; RGBA inputs give RGBA results. 4:
/// `SPN_DEVICE_TORCH_CPU` (libspn links no libtorch; CUDA runs in the backend it loads, `backend.rs`). 5:
/// `spn_sample_params.pick` (the mean pick) and `reserved`. 6: `reserved` becomes `upscale_factor` (0, the
/// default, is what every earlier host passed: the model's scale). 7: `draws` (averaged draws; 0, one draw) and
/// a new `reserved`.
pub const ABI_VERSION: u32 = 7;

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
pub extern "C" fn spn_status_string(status: std::ffi::c_int) -> *const c_char {
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
