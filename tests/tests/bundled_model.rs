//! The bundled default model: found without set-up, generates real images, and the Rust API example runs.
use spn_tests::*;
use std::collections::HashSet;

#[test]
fn bundled_model_generates_non_degenerate_images_from_a_fixed_seed() {
    let path = spn::default_model_path().expect("models/default.spn is part of the checkout");
    let dir = tempfile::tempdir().unwrap();
    // No --model: the CLI finds the bundled one.
    spn_ok(&[
        "generate",
        "--count",
        "2",
        "--seed",
        "1",
        "--out",
        s(dir.path()),
        "--batch-size",
        "2",
    ]);
    let model = spn::Pipeline::load(&path, tch::Device::Cpu).unwrap();
    for seed in [1, 2] {
        let img = spn::data::load_rgb(&dir.path().join(format!("sample-{seed}.png"))).unwrap();
        assert_eq!(
            img.dimensions(),
            (model.config().width as u32, model.config().height as u32)
        );
        let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert!(
            colours.len() > 16,
            "seed {seed}: only {} distinct colours",
            colours.len()
        );
        let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert!(white < img.pixels().len(), "seed {seed}: a blank image");
    }
    // The same seed again gives the same bytes.
    let again = tempfile::tempdir().unwrap();
    spn_ok(&[
        "generate",
        "--count",
        "1",
        "--seed",
        "2",
        "--out",
        s(again.path()),
    ]);
    assert_eq!(
        std::fs::read(dir.path().join("sample-2.png")).unwrap(),
        std::fs::read(again.path().join("sample-2.png")).unwrap()
    );
}

/// The bar the bundled model was trained for (issue 15): on every style's held-out split, its exact likelihood
/// below lossless WebP (libwebp at its strongest) on the same images. A model swapped in without retraining far
/// enough, or one that knows fewer styles, fails here.
#[test]
fn bundled_model_beats_lossless_webp_on_every_styles_held_out_emoji() {
    let heldout = root().join("data/styles64/heldout");
    assert!(
        heldout.is_dir(),
        "{} is missing: `make test` fetches it (`make data`)",
        heldout.display()
    );
    // No --model: the bundled one.
    let scores = held_out_scores(
        &["eval", "--data", s(&heldout), "--per-folder", "--json"],
        &[
            "google",
            "noto",
            "fluent-emoji-flat",
            "openmoji",
            "emojione",
        ],
    );
    let mut failures = Vec::new();
    for f in &scores {
        // 5% of each style's emoji, by the hash of the emoji's name: 95 to 235 images.
        assert!(
            f.images > 80,
            "{}: only {} held-out images",
            f.folder,
            f.images
        );
        // JPEG XL (libjxl at its strongest effort) is reported too: `make test` installs cjxl. Below it is the
        // aim, not the bar (models/README.md says where the bundle stands).
        assert!(
            f.jxl.is_some_and(|j| j < f.png),
            "JPEG XL not measured: {}",
            f.line
        );
        if !(f.model < f.webp && f.webp < f.png) {
            failures.push(&f.line);
        }
    }
    assert!(
        failures.is_empty(),
        "held-out bits/dim above libwebp: {failures:#?}"
    );
}

/// One style's row of `spn eval --per-folder --json`.
struct Score {
    folder: String,
    images: u64,
    model: f64,
    webp: f64,
    png: f64,
    jxl: Option<f64>,
    /// The row as the tests print it.
    line: String,
}

/// Runs `spn` with `args` (an `eval --per-folder --json`), checks that every style in `styles` has a row, and
/// prints and returns the rows.
fn held_out_scores(args: &[&str], styles: &[&str]) -> Vec<Score> {
    let r = json(&spn_ok(args));
    let rows = r.as_array().expect("one result per style");
    let names: Vec<&str> = rows.iter().filter_map(|f| f["folder"].as_str()).collect();
    for want in styles {
        assert!(names.contains(want), "no held-out {want} in {names:?}");
    }
    rows.iter()
        .map(|f| {
            let folder = f["folder"].as_str().unwrap_or_default().to_string();
            let (model, webp, png, jxl) = (
                f["bits_per_dim"].as_f64().unwrap(),
                f["webp_bits_per_dim"].as_f64().unwrap(),
                f["png_bits_per_dim"].as_f64().unwrap(),
                f["jxl_bits_per_dim"].as_f64(),
            );
            let line = format!(
                "{folder}: model {model:.4}, libwebp {webp:.4}, JPEG XL {jxl:?}, PNG {png:.4}"
            );
            eprintln!("{line}");
            Score {
                folder,
                images: f["images"].as_u64().unwrap_or(0),
                model,
                webp,
                png,
                jxl,
                line,
            }
        })
        .collect()
}

/// Upscaling that beats a classic filter (issue 15 item 5): on the first 24 held-out images of every style,
/// the bundled model's 4x size upscaling from slice 0 (8 draws at temperature 1 averaged, the setting
/// models/README.md measured best; 16 gain about 0.2 dB more at twice the time) has a higher PSNR than Lanczos
/// from the same 16x16 input; and inputs unlike emoji keep their flat regions flat.
#[test]
fn bundled_model_upscales_every_style_better_than_lanczos() {
    let r = upscale_above_lanczos(
        "data/styles64/heldout",
        &[
            "google",
            "noto",
            "fluent-emoji-flat",
            "openmoji",
            "emojione",
        ],
        24,
    );
    // Share of each synthetic input's flat regions that stays within 8 levels of the input. Flat colour and
    // a disc on a coloured background stay whole; a gradient's and line art's regions are flat only nearly
    // (the bundle keeps 87% of both with 8 draws, models/README.md).
    for f in r["flat"].as_array().expect("flat rows") {
        let kept = f["flat_kept"].as_f64().unwrap();
        eprintln!("{}: {:.1}% kept flat", f["input"], kept * 100.0);
        let bar = if f["input"] == "flat green" || f["input"] == "disc on a coloured background" {
            0.99
        } else {
            0.8
        };
        assert!(
            kept >= bar,
            "{}: {:.1}% kept flat, below {:.0}%",
            f["input"],
            kept * 100.0,
            bar * 100.0
        );
    }
}

/// The same from 64x64 to 256x256 (issue 15 item 5): the bundled 64x64 model draws the 256x256 canvas window
/// by window from every 4th pixel of held-out emoji rendered at 256. Two images a style, the first by name,
/// to keep `make test` within its budget (52 s an image with 8 draws on two cores); models/README.md has 8.
#[test]
fn bundled_model_upscales_64_to_256_better_than_lanczos() {
    upscale_above_lanczos(
        "data/styles256/heldout",
        &["noto", "fluent-emoji-flat", "openmoji", "emojione"],
        2,
    );
}

/// `spn bench --upscale` with the bundled model on the first `limit` images of each style in `heldout` (8
/// draws at T = 1 averaged, the model's scale S as the factor): fails unless the model's PSNR is above
/// Lanczos's on every style; returns the report.
fn upscale_above_lanczos(heldout: &str, styles: &[&str], limit: usize) -> serde_json::Value {
    let heldout = root().join(heldout);
    assert!(
        heldout.is_dir(),
        "{} is missing: `make test` fetches it (`make data data-256`)",
        heldout.display()
    );
    let mut args = vec!["bench".to_string(), "--upscale".to_string()];
    args.extend(
        styles
            .iter()
            .map(|st| heldout.join(st).to_string_lossy().into_owned()),
    );
    let limit_arg = limit.to_string();
    args.extend(
        [
            "--limit",
            &limit_arg,
            "--average",
            "8",
            "--temperatures",
            "1",
            "--json",
            "--device",
            "cpu",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = json(&spn_ok(&args));
    let rows = r["psnr"].as_array().expect("PSNR rows");
    assert_eq!(rows.len(), styles.len(), "{r}");
    let mut failures = Vec::new();
    for row in rows {
        let (model, lanczos) = (
            row["model_psnr"].as_f64().unwrap(),
            row["lanczos_psnr"].as_f64().unwrap(),
        );
        let line = format!(
            "{}: model {model:.2} dB, Lanczos {lanczos:.2} dB",
            row["set"]
        );
        eprintln!("{line}");
        assert_eq!(row["images"].as_u64(), Some(limit as u64), "{line}");
        if model <= lanczos {
            failures.push(line);
        }
    }
    assert!(
        failures.is_empty(),
        "upscaling below Lanczos: {failures:#?}"
    );
    r
}

/// The 256x256 bundle (`models/emoji256.spn`, issue 15 item 2) on the first 8 held-out images of each style
/// rendered at 256: its exact likelihood below libwebp's and PNG's on the same images (models/README.md,
/// "Model card: `emoji256.spn`").
#[test]
fn bundled_256_model_beats_lossless_webp_on_the_held_out_emoji_at_256() {
    let heldout = root().join("data/styles256/heldout");
    assert!(
        heldout.is_dir(),
        "{} is missing: `make test` renders it (`make data-256`)",
        heldout.display()
    );
    let model = root().join("models/emoji256.spn");
    let scores = held_out_scores(
        &[
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&heldout),
            "--per-folder",
            "--limit",
            "8",
            "--json",
            "--device",
            "cpu",
        ],
        &["noto", "fluent-emoji-flat", "openmoji", "emojione"],
    );
    let mut failures = Vec::new();
    for f in &scores {
        assert_eq!(f.images, 8, "{}", f.line);
        if !(f.model < f.webp && f.model < f.png) {
            failures.push(&f.line);
        }
    }
    assert!(
        failures.is_empty(),
        "held-out bits/dim at 256 above the bar: {failures:#?}"
    );
}

#[test]
fn rust_api_example_runs_on_the_bundled_model() {
    let exe = spn_bin().parent().unwrap().join("spn-rust-api");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&exe)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["generated-1.png", "generated-4.png", "completed-7.png"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    // The completion kept the top half of generated-1.
    let (a, b) = (
        spn::data::load_rgb(&dir.path().join("generated-1.png")).unwrap(),
        spn::data::load_rgb(&dir.path().join("completed-7.png")).unwrap(),
    );
    for y in 0..a.height() / 2 {
        for x in 0..a.width() {
            assert_eq!(a.get_pixel(x, y), b.get_pixel(x, y));
        }
    }
}
