//! Files in and out for the commands: models, images, output checks made before any long work.
use crate::Device;
use anyhow::{bail, Context, Result};
use spn::decode::Decoding;
use spn::{data, HostModel, Network};
use std::path::{Path, PathBuf};

pub fn model_path(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => spn::default_model_path().context("no --model given and no bundled model found"),
    }
}

/// The model to sample with: on the CPU the plain-Rust engine (no libtorch), else the libtorch pipeline on the
/// device (and on the CPU too for the libtorch engines, `--naive`).
pub fn load(
    model: Option<PathBuf>,
    device: &Device,
    decoding: Decoding,
) -> Result<Box<dyn Network>> {
    let path = model_path(model)?;
    if device.is_cpu() && decoding == Decoding::Incremental {
        return Ok(Box::new(HostModel::load(&path)?));
    }
    #[cfg(feature = "torch")]
    return Ok(Box::new(spn::Pipeline::load(&path, device.torch()?)?));
    #[cfg(not(feature = "torch"))]
    anyhow::bail!("this spn was built without libtorch: it samples with the CPU engine only")
}

/// The libtorch pipeline on `device`: training, evaluation and scoring.
#[cfg(feature = "torch")]
pub fn load_pipeline(model: Option<PathBuf>, device: tch::Device) -> Result<spn::Pipeline> {
    let path = model_path(model)?;
    Ok(spn::Pipeline::load(&path, device)?)
}

pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Checks that an output file can be written, before any long work: a run must not end in "cannot write".
pub fn check_out_file(path: &Path) -> Result<()> {
    data::output_format(path)?;
    check_out_file_named(path, "file")
}

/// A file that can be written: not a folder, in a folder that can be created and written into.
pub fn check_out_file_named(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder: give a {what} name", path.display());
    }
    check_out_dir(data::parent_dir(path))
}

pub fn check_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} exists and is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tempfile::tempfile_in(dir).with_context(|| format!("cannot write into {}", dir.display()))?;
    Ok(())
}
