//! spn: Subscale Pixel Networks with Multidimensional Upscaling (Menick & Kalchbrenner, ICLR 2019) on
//! libtorch. See `docs/design.md` for the model and its invariants.
pub mod alpha;
pub mod batch;
pub mod bench;
pub mod bundle;
pub mod config;
pub mod data;
pub mod decode;
#[cfg(feature = "dist")]
pub mod dist;
#[cfg(not(feature = "dist"))]
#[path = "dist/stub.rs"]
pub mod dist;
pub mod error;
pub mod eval;
pub mod iconify;
pub mod model;
pub mod pipeline;
pub mod prepare;
pub mod sampler;
pub mod subscale;
pub mod train;

pub use config::{NetConfig, PipelineConfig, StageKind, StageSpec};
pub use error::{Error, Result};
pub use pipeline::Pipeline;

/// Parses a device name: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).
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

/// The bundled default model: `$SPN_MODEL`, else `models/default.spn` of the source tree this was built
/// from, else `models/default.spn` beside or above the executable.
pub fn default_model_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SPN_MODEL") {
        return Some(p.into());
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.spn");
    if built.exists() {
        return Some(built.canonicalize().unwrap_or(built));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(4)
        .map(|d| d.join("models/default.spn"))
        .find(|p| p.exists())
}
