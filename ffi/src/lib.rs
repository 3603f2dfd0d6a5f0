//! libspn: the C ABI of spn, documented in `include/spn.h`. One module per C object, after rustls-ffi:
//! - `boundary`: statuses, the per-thread message, the panic boundary every export goes through, versions;
//! - `handles`: ids for models and jobs, never reused;
//! - `model`, `job`, `image`, `sample`, `score`, `log`: the calls on each object;
//! - `backend`: the libtorch backend, loaded at run time for CUDA (libspn itself links no libtorch).
#![allow(non_camel_case_types)]

mod backend;
mod boundary;
mod handles;
mod image;
mod job;
mod log;
mod model;
mod sample;
mod score;

pub use boundary::ABI_VERSION;

// The layouts spn.h documents (ABI version 7). Appending a field changes these sizes; changing the offsets of
// existing fields is never allowed.
const _: () = assert!(std::mem::size_of::<model::spn_model_params>() == 12);
const _: () = assert!(std::mem::size_of::<model::spn_model_info>() == 32);
const _: () = assert!(std::mem::offset_of!(sample::spn_sample_params, pick) == 64);
const _: () = assert!(std::mem::offset_of!(sample::spn_sample_params, upscale_factor) == 68);
const _: () = assert!(std::mem::offset_of!(sample::spn_sample_params, draws) == 72);
const _: () = assert!(std::mem::size_of::<sample::spn_sample_params>() == 80);
const _: () = assert!(std::mem::offset_of!(sample::spn_sample_params, width) == 48);
const _: () = assert!(std::mem::offset_of!(sample::spn_sample_params, keep_alpha) == 60);
const _: () = assert!(std::mem::offset_of!(sample::spn_sample_params, progress) == 24);
const _: () = assert!(std::mem::size_of::<image::spn_image>() == 48);
const _: () = assert!(std::mem::size_of::<image::spn_image_view>() == 32);
