//! `spn_model`: loading a bundle, its description, and freeing it.
use crate::boundary::{
    boundary, c_path, invalid, quiet, read_sized, spn_status, Fail, SPN_ERR_DEVICE, SPN_ERR_MODEL,
};
use crate::handles::Registry;
use spn_core::{HostModel, Network};
use std::ffi::{c_char, c_int};

/// A loaded model: on the CPU the plain-Rust engine in libspn itself, on CUDA the libtorch backend loaded at
/// run time (`backend.rs`). Its weights are only read after loading, so calls may share it across threads.
pub struct SpnModel {
    pub net: Box<dyn Network + Send + Sync>,
}

pub static MODELS: Registry<SpnModel> = Registry::new("model");

#[repr(C)]
#[derive(Clone, Copy)]
pub struct spn_model_params {
    pub struct_size: u32,
    pub device: c_int,
    pub cuda_index: i32,
}

impl spn_model_params {
    /// Where each field ends: the struct sizes an older header may pass.
    pub const FIELD_ENDS: &'static [usize] = &[8, 12];
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

/// # Safety
/// `params` is NULL or points to a writable `spn_model_params`.
#[no_mangle]
pub unsafe extern "C" fn spn_model_params_init(params: *mut spn_model_params) {
    quiet(|| {
        if !params.is_null() {
            // SAFETY: non-null and writable by the caller's contract.
            unsafe { params.write_unaligned(spn_model_params::default()) };
        }
    })
}

/// The model at `path` on the device the host asked for: the CPU engine, or the libtorch backend for CUDA
/// (SPN_DEVICE_AUTO takes CUDA when the backend is installed and finds a GPU, else the CPU).
fn load(path: &std::path::Path, params: &spn_model_params) -> Result<SpnModel, Fail> {
    let cpu = || -> Result<SpnModel, Fail> {
        Ok(SpnModel {
            net: Box::new(HostModel::load(path)?),
        })
    };
    match params.device {
        0 if !crate::backend::gpu_driver_present() => cpu(),
        0 => match crate::backend::Backend::find() {
            Some(b) if b.cuda_devices() > 0 => Ok(SpnModel {
                net: Box::new(b.load(path, 0)?),
            }),
            _ => cpu(),
        },
        1 => cpu(),
        2 => {
            let b = crate::backend::Backend::find()
                .ok_or_else(|| Fail(SPN_ERR_DEVICE, crate::backend::missing_message()))?;
            let n = b.cuda_devices();
            if params.cuda_index < 0 || params.cuda_index >= n {
                return Err(Fail(
                    SPN_ERR_DEVICE,
                    format!(
                        "CUDA device {} requested but {n} CUDA device(s) are available",
                        params.cuda_index
                    ),
                ));
            }
            Ok(SpnModel {
                net: Box::new(b.load(path, params.cuda_index)?),
            })
        }
        // The libtorch backend on the CPU: the reference engine, for checking the CPU engine against it.
        3 => {
            let b = crate::backend::Backend::find()
                .ok_or_else(|| Fail(SPN_ERR_DEVICE, crate::backend::missing_message()))?;
            Ok(SpnModel {
                net: Box::new(b.load(path, spn_core::backend::TORCH_CPU)?),
            })
        }
        d => Err(invalid(format!("unknown device {d}"))),
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or a struct of at least its `struct_size`
/// bytes; `out_model` is NULL or writable.
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
        let default = spn_model_params::default();
        // SAFETY: `params` is NULL or holds struct_size bytes (the caller's contract).
        let params = unsafe {
            read_sized(
                params,
                default,
                spn_model_params::FIELD_ENDS,
                "spn_model_params",
            )
        }?;
        // SAFETY: NULL or NUL-terminated (the caller's contract).
        let path = match unsafe { c_path(path, "path") }? {
            Some(p) => p,
            None => spn_core::find_default_model(library_dir().as_deref()).ok_or_else(|| {
                Fail(
                    SPN_ERR_MODEL,
                    "no bundled default model found (looked in share/spn beside libspn's folder, $SPN_MODEL \
                     and the source tree); pass a path or set SPN_MODEL"
                        .into(),
                )
            })?,
        };
        if !matches!(params.device, 0..=3) {
            return Err(invalid(format!("unknown device {}", params.device)));
        }
        if !path.exists() {
            return Err(Fail(
                SPN_ERR_MODEL,
                format!("model file {} does not exist", path.display()),
            ));
        }
        let model = load(&path, &params)?;
        log::info!("loaded {}", path.display());
        let handle = MODELS.insert(model)?;
        // SAFETY: non-null (checked) and writable (the caller's contract).
        unsafe { *out_model = handle };
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn spn_model_free(model: *mut SpnModel) {
    quiet(|| MODELS.remove(model))
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

/// # Safety
/// `info` is NULL or points to a struct whose `struct_size` the caller set, of that many writable bytes.
#[no_mangle]
pub unsafe extern "C" fn spn_model_get_info(
    model: *const SpnModel,
    info: *mut spn_model_info,
) -> spn_status {
    boundary("spn_model_get_info", || {
        let m = MODELS.get(model)?;
        if info.is_null() {
            return Err(invalid("info is NULL"));
        }
        // SAFETY: non-null; the struct starts with its u32 struct_size (the caller's contract).
        let size = unsafe { std::ptr::read_unaligned(info as *const u32) } as usize;
        if size < 8 {
            return Err(invalid(
                "spn_model_info.struct_size must be set to sizeof(spn_model_info)",
            ));
        }
        let c = m.net.config();
        let n = size.min(std::mem::size_of::<spn_model_info>());
        let full = spn_model_info {
            struct_size: n as u32,
            width: c.width as u32,
            height: c.height as u32,
            scale: c.scale as u32,
            msb_bits: c.msb_bits.unwrap_or(0),
            stages: c.stages().len() as u32,
            parameters: c.parameter_count(),
        };
        // SAFETY: the caller's struct has `size` >= n writable bytes; only the fields it has are written
        // (an output struct may end inside a field: that field is then cut, never over-written past n).
        unsafe {
            std::ptr::copy_nonoverlapping(&full as *const _ as *const u8, info as *mut u8, n)
        };
        Ok(())
    })
}

/// The folder libspn itself was loaded from (where `make install` put it), so the default model is found
/// relative to the library wherever the prefix was installed or moved to.
pub(crate) fn library_dir() -> Option<std::path::PathBuf> {
    // SAFETY: Dl_info is plain data (pointers and integers), for which all zeros is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = library_dir as fn() -> Option<std::path::PathBuf> as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`, a plain struct owned here.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic loader, valid while libspn is loaded.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = std::path::PathBuf::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
    );
    path.canonicalize()
        .ok()?
        .parent()
        .map(std::path::Path::to_path_buf)
}
