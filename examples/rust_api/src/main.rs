//! The spn crate from Rust: load the bundled model, generate with a seed, complete an image with a mask,
//! and write PNGs. `spn-rust-api OUT_DIR [MODEL]`
use spn::sampler::{no_progress, CancelToken, SampleOptions, Sampler};
use spn::{data, Pipeline};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "out/rust-api".into()),
    );
    let model_path = match std::env::args().nth(2) {
        Some(p) => PathBuf::from(p),
        None => spn::default_model_path().ok_or("no bundled model: run `make demo` first")?,
    };
    let model = Pipeline::load(&model_path, tch::Device::cuda_if_available())?;
    let sampler = Sampler::new(
        &model,
        SampleOptions {
            temperature: 1.0,
            batch_size: 4,
            ..Default::default()
        },
    )?;
    let cancel = CancelToken::new();

    // Generate: each image is reproducible from its seed alone.
    let seeds = [1u64, 2, 3, 4];
    let samples = sampler.generate(&seeds, &mut no_progress(), &cancel)?;
    for (i, seed) in seeds.iter().enumerate() {
        let img = data::from_tensor(&samples.images.get(i as i64))?;
        data::save_png(&img, &out.join(format!("generated-{seed}.png")))?;
        println!("generated-{seed}.png: {:.0} bits", samples.bits[i]);
    }

    // Complete: keep the top half of the first sample, redraw the bottom half.
    let (h, w) = (model.config().height, model.config().width);
    let image = samples.images.get(0);
    let known = tch::Tensor::arange(h, (tch::Kind::Int64, tch::Device::Cpu))
        .lt(h / 2)
        .view([h, 1])
        .expand([h, w], false);
    let completed = sampler.complete(&image, &known, &[7], &mut no_progress(), &cancel)?;
    data::save_png(
        &data::from_tensor(&completed.images.get(0))?,
        &out.join("completed-7.png"),
    )?;
    println!("completed-7.png: top half kept, bottom half sampled");
    Ok(())
}
