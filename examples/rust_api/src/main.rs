//! The spn crate from Rust, without libtorch: load the bundled model into the plain-Rust CPU engine, generate
//! with seeds, complete an image with a mask, and write PNGs. `spn-rust-api OUT_DIR [MODEL]`
//!
//! The crate without its `torch` feature builds only this (no PyTorch needed); with it,
//! `spn::Pipeline::load(path, tch::Device::Cuda(0))` is a model for the same sampler on a GPU.
use spn::sampler::{no_progress, CancelToken, CanvasJob, SampleOptions, Sampler};
use spn::{data, HostModel};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "out/rust-api".into()),
    );
    let model_path = match std::env::args().nth(2) {
        Some(p) => PathBuf::from(p),
        None => spn::default_model_path().ok_or("no bundled model found")?,
    };
    let model = HostModel::load(&model_path)?;
    let sampler = Sampler::new(
        &model,
        SampleOptions {
            temperature: 1.0,
            batch_size: 4,
            ..Default::default()
        },
    )?;
    let cancel = CancelToken::new();
    let (w, h) = (model.config.width as u32, model.config.height as u32);

    // Generate: each image is reproducible from its seed alone.
    let seeds = [1u64, 2, 3, 4];
    let job = CanvasJob::Generate {
        width: w,
        height: h,
    };
    let samples = sampler.canvas(&job, &seeds, &mut no_progress(), &cancel)?;
    for s in &samples {
        data::save_png(
            &s.image.to_rgb8(),
            &out.join(format!("generated-{}.png", s.seed)),
        )?;
        println!("generated-{}.png: {:.0} bits", s.seed, s.bits);
    }

    // Complete: keep the top half of the first sample, redraw the bottom half.
    let known: Vec<bool> = (0..h)
        .flat_map(|y| (0..w).map(move |_| y < h / 2))
        .collect();
    let job = CanvasJob::Complete {
        image: &samples[0].image,
        known: &known,
    };
    let completed = sampler.canvas(&job, &[7], &mut no_progress(), &cancel)?;
    data::save_png(&completed[0].image.to_rgb8(), &out.join("completed-7.png"))?;
    println!("completed-7.png: top half kept, bottom half sampled");
    Ok(())
}
