//! spn: Subscale Pixel Networks with Multidimensional Upscaling (Menick & Kalchbrenner, ICLR 2019) on
//! libtorch. See `docs/design.md` for the model and its invariants.
//!
//! Without the `torch` feature the crate is what sampling on a CPU needs and links no libtorch: configs,
//! bundles (read with `safetensors`), the plain-Rust CPU engine (`decode::host`) and the sampler. Training,
//! exact evaluation, the libtorch engines (CUDA) and the benchmarks need the feature (issue 18).
pub mod alpha;
pub mod backend;
pub mod batch;
#[cfg(feature = "torch")]
pub mod bench;
pub mod bundle;
pub mod config;
pub mod data;
pub mod decode;
#[cfg(feature = "dist")]
pub mod dist;
#[cfg(all(feature = "torch", not(feature = "dist")))]
#[path = "dist/stub.rs"]
pub mod dist;
pub mod error;
#[cfg(feature = "torch")]
pub mod eval;
pub mod iconify;
#[cfg(feature = "torch")]
pub mod model;
#[cfg(feature = "torch")]
pub mod pipeline;
#[cfg(feature = "torch")]
pub mod precision;
pub mod prepare;
pub mod resample;
pub mod sampler;
pub mod subscale;
#[cfg(feature = "torch")]
pub mod train;
pub mod weights;

pub use config::{NetConfig, PipelineConfig, StageKind, StageSpec};
pub use decode::host::HostModel;
pub use decode::Network;
pub use error::{Error, Result};
#[cfg(feature = "torch")]
pub use pipeline::Pipeline;

/// Parses a device name: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).
#[cfg(feature = "torch")]
pub fn parse_device(name: &str) -> Result<tch::Device> {
    match name {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        d => match d
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(i) => cuda(i),
            None => Err(Error::input(format!(
                "unknown device '{d}' (use cpu, cuda, cuda:N or auto)"
            ))),
        },
    }
}

#[cfg(feature = "torch")]
fn cuda(i: usize) -> Result<tch::Device> {
    let n = tch::Cuda::device_count() as usize;
    if i < n {
        Ok(tch::Device::Cuda(i))
    } else {
        Err(Error::input(format!(
            "CUDA device {i} requested but {n} CUDA device(s) are available"
        )))
    }
}

/// The bundled default model for a program installed in `install_dir` (the folder of the installed library or
/// executable), looked for in order: `share/spn/default.spn` beside that folder (`DIR/../share/spn`, where
/// `make install` puts it), then `$SPN_MODEL`, then `models/default.spn` of the source tree this was built from,
/// then `models/default.spn` in a folder above `install_dir` (a build inside a checkout).
pub fn find_default_model(install_dir: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let installed = install_dir.and_then(|d| {
        let p = d.join("../share/spn/default.spn");
        p.is_file().then(|| p.canonicalize().unwrap_or(p))
    });
    if installed.is_some() {
        return installed;
    }
    if let Some(p) = std::env::var_os("SPN_MODEL") {
        return Some(p.into());
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.spn");
    if built.is_file() {
        return Some(built.canonicalize().unwrap_or(built));
    }
    install_dir?
        .ancestors()
        .take(4)
        .map(|d| d.join("models/default.spn"))
        .find(|p| p.is_file())
}

/// [`find_default_model`] for the running executable (the `spn` tool, Rust programs).
pub fn default_model_path() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok();
    find_default_model(exe.as_deref().and_then(std::path::Path::parent))
}
