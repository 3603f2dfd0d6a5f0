//! `spn data`: a training set from folders of images and Iconify vector sets (`spn::prepare`).
use crate::progress::bar;
use anyhow::Result;
use std::path::PathBuf;

/// Prepare a data set: composite every image of SRC, and every icon of the Iconify sets rendered at SIZE,
/// on white, and write OUT/train and OUT/heldout with the file-name-hash split `spn train` uses (icon sets
/// in one sub-folder per style, each emoji held out in every style or in none).
#[derive(clap::Args)]
pub struct Args {
    /// A folder of images (written flat into OUT/train and OUT/heldout, or into a sub-folder).
    #[arg(long)]
    src: Option<PathBuf>,
    /// The sub-folder (style name) for the images of SRC.
    #[arg(long, requires = "src")]
    src_style: Option<String>,
    /// An Iconify JSON icon set (`icons.json` of an `@iconify-json/*` package); repeatable.
    #[arg(long)]
    iconify: Vec<PathBuf>,
    /// Name rendered emoji after the files of this folder with the same code points [default: SRC].
    #[arg(long)]
    keys_from: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 5)]
    heldout_percent: u32,
    /// Fit every image to, and render every icon at, SIZE x SIZE (centre crop and resize).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    size: Option<u32>,
    /// Write RGBA with the images' own alpha instead of compositing on white (every reader composites it
    /// on white by the same rule, so the pixels read are the same; `spn train --backgrounds` uses it).
    #[arg(long)]
    keep_alpha: bool,
    /// Write one CROP x CROP window of each image (after fitting or rendering at SIZE), where at least a
    /// quarter is not transparent if such a window is found, at a position seeded by the file name: details
    /// at a larger scale for a smaller model (a 64x64 model that upscales 256x256 canvases).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    crop: Option<u32>,
}

pub fn run(a: Args) -> Result<()> {
    let opts = spn::prepare::PrepareOptions {
        src: a.src,
        src_style: a.src_style,
        iconify: a.iconify,
        keys_from: a.keys_from,
        out: a.out,
        heldout_percent: a.heldout_percent,
        size: a.size,
        keep_alpha: a.keep_alpha,
        crop: a.crop,
    };
    let items = spn::prepare::plan(&opts)?;
    let pb = bar(items.len() as u64, "data");
    let (tr, ho) = spn::prepare::write(&items, &opts, &|| pb.inc(1))?;
    pb.finish_and_clear();
    println!(
        "{tr} training and {ho} held-out images in {}",
        opts.out.display()
    );
    Ok(())
}
