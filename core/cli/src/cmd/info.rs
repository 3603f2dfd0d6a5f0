//! `spn info`: what a bundle holds.
use crate::io::{model_path, print_json};
use anyhow::Result;
use spn::Pipeline;
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
    let model = Pipeline::load(&path, tch::Device::Cpu)?;
    let stages: Vec<serde_json::Value> = model
        .specs()
        .iter()
        .map(|s| {
            serde_json::json!({
                "stage": s.kind.name(), "kind": s.kind, "height": s.height, "width": s.width,
                "scale": s.scale, "bits": s.bits, "parameters": model.parameter_count(Some(s.kind.name())),
                "net": s.net,
            })
        })
        .collect();
    let v = serde_json::json!({
        "path": path, "format_version": spn::bundle::FORMAT_VERSION, "config": model.config(),
        "parameters": model.parameter_count(None), "stages": stages, "training": model.info,
    });
    if a.json {
        print_json(&v)
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }
}
