//! The libtorch backend, loaded at run time (`spn::backend`, docs/design.md section 9): libspn links no
//! libtorch, and loads `libspn_torch.so` only when a host asks for CUDA (or AUTO finds a GPU through it), from
//! `$SPN_BACKEND`, else beside libspn itself. Its models are [`Network`]s like the CPU engine's, so the one
//! sampler runs on both.
use crate::boundary::{Fail, SPN_ERR_DEVICE, SPN_ERR_MODEL};
use spn_core::backend::{self as abi, spn_backend_v1, spn_slice_batch};
use spn_core::decode::{Decoding, Engine, Network, PreparedSlice, SliceBatch, SliceDecoding};
use spn_core::{Error, PipelineConfig, Result};
use std::ffi::{c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The backend's file name.
pub const FILE: &str = "libspn_torch.so";

/// A loaded backend: the library stays loaded while anything of it is alive.
pub struct Backend {
    table: &'static spn_backend_v1,
    _lib: libloading::Library,
}

/// The backend, or why there is none (not found, or found and refused).
static BACKEND: OnceLock<std::result::Result<Arc<Backend>, String>> = OnceLock::new();

/// Where the backend is looked for, in order.
fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("SPN_BACKEND") {
        c.push(PathBuf::from(p));
    }
    if let Some(d) = crate::model::library_dir() {
        c.push(d.join(FILE));
    }
    c
}

/// Why a host that asks for CUDA gets none: what to install, or why the backend found was refused.
pub fn missing_message() -> String {
    match BACKEND.get() {
        Some(Err(why)) => why.clone(),
        _ => not_found(),
    }
}

fn not_found() -> String {
    let looked: Vec<String> = candidates()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "CUDA needs libspn's libtorch backend ({FILE}), which was not found (looked at: {}): install it with \
         `make install-cuda`, or set SPN_BACKEND to its path",
        looked.join(", ")
    )
}

/// Whether this machine has an NVIDIA driver at all: without one, SPN_DEVICE_AUTO does not load the backend
/// (and its gigabytes of libtorch) only to find no GPU.
pub fn gpu_driver_present() -> bool {
    ["/proc/driver/nvidia/version", "/dev/nvidiactl"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

impl Backend {
    /// The backend, loaded once per process; None when it is not installed or cannot load (logged, and
    /// given by [`missing_message`]).
    pub fn find() -> Option<Arc<Backend>> {
        BACKEND
            .get_or_init(|| {
                let path = candidates()
                    .into_iter()
                    .find(|p| p.is_file())
                    .ok_or_else(not_found)?;
                Self::open(&path).map(Arc::new).map_err(|e| {
                    let msg = format!(
                        "libspn's libtorch backend {} cannot be used: {e}",
                        path.display()
                    );
                    log::warn!("{msg}");
                    msg
                })
            })
            .as_ref()
            .ok()
            .cloned()
    }

    fn open(path: &std::path::Path) -> std::result::Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; the backend is our own library, built from this
        // workspace, whose initialisers (libtorch's) are safe to run once per process.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY: the entry point's type is `spn::backend`'s, which the backend exports.
        let entry: libloading::Symbol<extern "C" fn() -> *const spn_backend_v1> =
            unsafe { lib.get(abi::ENTRY_POINT) }.map_err(|e| e.to_string())?;
        let ptr = entry();
        // SAFETY: the table is a static of the library, which `_lib` keeps loaded for as long as the
        // reference is used (the Backend owns both).
        let table: &'static spn_backend_v1 = unsafe { ptr.as_ref() }.ok_or("no table")?;
        if table.version != abi::VERSION
            || (table.struct_size as usize) < std::mem::size_of::<spn_backend_v1>()
        {
            return Err(format!(
                "backend table version {} ({} bytes) does not match this libspn's ({}, {} bytes): install the \
                 backend of the same release",
                table.version,
                table.struct_size,
                abi::VERSION,
                std::mem::size_of::<spn_backend_v1>()
            ));
        }
        Ok(Self { table, _lib: lib })
    }

    /// CUDA devices the backend's libtorch sees.
    pub fn cuda_devices(&self) -> i32 {
        // SAFETY: a table entry of a loaded backend.
        unsafe { (self.table.cuda_devices)() }
    }

    fn error(&self, status: i32) -> String {
        // SAFETY: the backend's message is a NUL-terminated string valid on this thread until its next call.
        let msg = unsafe { CStr::from_ptr((self.table.last_error)()) };
        format!(
            "libtorch backend (status {status}): {}",
            msg.to_string_lossy()
        )
    }

    fn check(&self, status: i32) -> Result<()> {
        match status {
            abi::OK => Ok(()),
            s => Err(Error::Other(self.error(s))),
        }
    }

    /// Loads the bundle at `path` on CUDA device `index` (or `abi::TORCH_CPU`).
    /// The backend reads and checks the bundle (`Pipeline::load`); its config comes back through the table.
    pub fn load(self: &Arc<Self>, path: &std::path::Path, index: i32) -> Result<RemoteModel, Fail> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| crate::boundary::invalid("path holds a NUL byte"))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and a writable out pointer.
        let status = unsafe { (self.table.load)(c_path.as_ptr(), index, &mut handle) };
        match status {
            abi::OK => {}
            abi::ERR_DEVICE => return Err(Fail(SPN_ERR_DEVICE, self.error(status))),
            abi::ERR_MODEL => return Err(Fail(SPN_ERR_MODEL, self.error(status))),
            s => return Err(Fail(crate::boundary::SPN_ERR_INTERNAL, self.error(s))),
        }
        // SAFETY: a live model; the string lives as long as it and is copied out here.
        let json = unsafe { CStr::from_ptr((self.table.config_json)(handle)) };
        match serde_json::from_str::<PipelineConfig>(&json.to_string_lossy()) {
            Ok(config) => Ok(RemoteModel {
                backend: self.clone(),
                handle,
                config,
            }),
            Err(e) => {
                // SAFETY: made by load just now, freed once.
                unsafe { (self.table.free)(handle) };
                Err(crate::boundary::internal(format!(
                    "the backend's config: {e}"
                )))
            }
        }
    }
}

/// A model loaded by the backend.
pub struct RemoteModel {
    backend: Arc<Backend>,
    handle: *mut c_void,
    config: PipelineConfig,
}

// SAFETY: the backend's model is only read after loading; its engines run on the calling thread, one call at a
// time per decoder, and libtorch allows concurrent reads of a model's tensors.
unsafe impl Send for RemoteModel {}
// SAFETY: as above.
unsafe impl Sync for RemoteModel {}

impl Drop for RemoteModel {
    fn drop(&mut self) {
        // SAFETY: made by the backend's load, freed once, after every prepared slice and decoder (they borrow
        // the model).
        unsafe { (self.backend.table.free)(self.handle) }
    }
}

impl Network for RemoteModel {
    fn config(&self) -> &PipelineConfig {
        &self.config
    }

    fn engine(&self, decoding: Decoding, host_embedder: bool) -> Result<Box<dyn Engine + '_>> {
        if decoding != Decoding::Incremental || !host_embedder {
            return Err(Error::Other(
                "the libtorch backend runs its own engine only".into(),
            ));
        }
        Ok(Box::new(RemoteEngine(self)))
    }
}

struct RemoteEngine<'m>(&'m RemoteModel);

/// A slice batch as the table takes it; borrows `input`.
fn c_batch(input: &SliceBatch) -> spn_slice_batch {
    spn_slice_batch {
        b: input.b,
        h: input.h,
        w: input.w,
        cin: input.cin,
        cond: input.cond.as_ptr(),
        ks: input.ks.as_ptr(),
        values: input.values.as_ptr(),
    }
}

impl Engine for RemoteEngine<'_> {
    fn name(&self) -> &'static str {
        let m = self.0;
        // SAFETY: a live model; the name is a static string of the backend.
        let name = unsafe { CStr::from_ptr((m.backend.table.engine_name)(m.handle)) };
        match name.to_str() {
            Ok("tensor (libtorch)") => "tensor (libtorch)",
            Ok("naive (libtorch)") => "naive (libtorch)",
            _ => "libtorch",
        }
    }

    fn prepare<'e>(&'e self, si: usize, input: &SliceBatch) -> Result<Box<dyn PreparedSlice + 'e>> {
        let (m, b) = (self.0, c_batch(input));
        let mut handle = std::ptr::null_mut();
        // SAFETY: a live model, a batch whose arrays hold its sizes (SliceBatch's), a writable out pointer.
        m.backend
            .check(unsafe { (m.backend.table.prepare)(m.handle, si, &b, &mut handle) })?;
        Ok(Box::new(RemotePrepared { model: m, handle }))
    }

    fn score(&self, si: usize, input: &SliceBatch) -> Result<Vec<f32>> {
        let (m, b) = (self.0, c_batch(input));
        let mut out = vec![0f32; input.b * input.h * input.w * 3];
        // SAFETY: as in prepare; `out` holds `len` floats.
        m.backend.check(unsafe {
            (m.backend.table.score)(m.handle, si, &b, out.as_mut_ptr(), out.len())
        })?;
        Ok(out)
    }
}

struct RemotePrepared<'m> {
    model: &'m RemoteModel,
    handle: *mut c_void,
}

impl Drop for RemotePrepared<'_> {
    fn drop(&mut self) {
        // SAFETY: made by prepare, freed once, after its decoders (they borrow it).
        unsafe { (self.model.backend.table.prepared_free)(self.handle) }
    }
}

impl PreparedSlice for RemotePrepared<'_> {
    fn decoder(&self, range: std::ops::Range<usize>) -> Result<Box<dyn SliceDecoding + '_>> {
        let t = &self.model.backend;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a live prepared slice and a writable out pointer; the backend checks the range.
        t.check(unsafe { (t.table.decoder)(self.handle, range.start, range.len(), &mut handle) })?;
        Ok(Box::new(RemoteDecoder { backend: t, handle }))
    }
}

struct RemoteDecoder<'p> {
    backend: &'p Backend,
    handle: *mut c_void,
}

impl Drop for RemoteDecoder<'_> {
    fn drop(&mut self) {
        // SAFETY: made by decoder, freed once.
        unsafe { (self.backend.table.decoder_free)(self.handle) }
    }
}

impl SliceDecoding for RemoteDecoder<'_> {
    fn features(&mut self, pos: usize) -> Result<()> {
        // SAFETY: a live decoder, used by this thread only.
        self.backend
            .check(unsafe { (self.backend.table.features)(self.handle, pos) })
    }

    fn channel_logits(&mut self, ch: usize, chosen: &[[i64; 3]]) -> Result<&[f32]> {
        let (mut ptr, mut len) = (std::ptr::null(), 0usize);
        // SAFETY: a live decoder; `chosen` holds its length of pixels; the out pointers are writable.
        self.backend.check(unsafe {
            (self.backend.table.channel_logits)(
                self.handle,
                ch,
                chosen.as_ptr(),
                chosen.len(),
                &mut ptr,
                &mut len,
            )
        })?;
        if ptr.is_null() {
            return Err(Error::Other("the backend returned no logits".into()));
        }
        // SAFETY: the backend's buffer of `len` floats stays valid until the decoder's next call, and the
        // returned slice borrows `self` mutably until then.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    fn commit(&mut self, pos: usize, values: &[[i64; 3]]) -> Result<()> {
        // SAFETY: a live decoder; `values` holds its length of pixels.
        self.backend.check(unsafe {
            (self.backend.table.commit)(self.handle, pos, values.as_ptr(), values.len())
        })
    }
}
