//! `spn info`: what a bundle holds.
use crate::io::{model_path, print_json};
use anyhow::Result;
use std::path::PathBuf;

/// Configs, parameter counts and training record of a model.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let path = model_path(a.model)?;
    // Loading builds the CPU engine, which checks every weight against the config.
    let model = spn::HostModel::load(&path)?;
    let stages: Vec<serde_json::Value> = model
        .config
        .stages()
        .iter()
        .map(|s| {
            serde_json::json!({
                "stage": s.kind.name(), "kind": s.kind, "height": s.height, "width": s.width,
                "scale": s.scale, "bits": s.bits, "parameters": s.parameter_count(),
                "net": s.net,
            })
        })
        .collect();
    let v = serde_json::json!({
        "path": path, "format_version": spn::bundle::FORMAT_VERSION, "config": model.config,
        "parameters": model.config.parameter_count(), "stages": stages, "training": model.info,
    });
    if a.json {
        print_json(&v)
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }
}
