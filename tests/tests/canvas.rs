//! Canvases of any size through the `spn` tool: what each job keeps exactly, alpha, determinism, bad sizes,
//! and the seams between windows (docs/design.md section 8).
use image::{DynamicImage, GenericImageView, Rgba, RgbaImage};
use spn::sampler::seams;
use spn::sampler::{CanvasJob, SampleOptions, Sampler};
use spn_tests::*;
use std::path::{Path, PathBuf};

/// A tiny 8x8 model (S = 2, 3 top bits), trained once per test binary.
fn tiny() -> PathBuf {
    static MODEL: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let p = tiny_model(dir.path(), "tiny.spn", 30);
            (dir, p)
        })
        .1
        .clone()
}

/// A `w x h` RGBA sprite: a opaque disc with a soft edge on a clear background, and some translucent pixels.
fn sprite(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - w as f32 / 2.0, y as f32 - h as f32 / 2.0);
        let r = (dx * dx + dy * dy).sqrt() / (w.min(h) as f32 / 2.0);
        let a = ((1.2 - r) * 255.0 * 3.0).clamp(0.0, 255.0) as u8;
        Rgba([(x * 7 % 256) as u8, (y * 11 % 256) as u8, 90, a])
    })
}

fn save(img: &RgbaImage, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    img.save(&p).unwrap();
    p
}

#[test]
fn complete_keeps_known_pixels_and_their_alpha_exactly_at_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    for (w, h) in [(37, 23), (5, 3), (1, 1), (8, 8), (100, 9)] {
        let img = sprite(w, h);
        // Known: everything but an ellipse (and, for 1x1, nothing).
        let mask = RgbaImage::from_fn(w, h, |x, y| {
            let (dx, dy) = (
                (x as f32 + 0.5) / w as f32 - 0.5,
                (y as f32 + 0.5) / h as f32 - 0.5,
            );
            let inside = dx * dx + dy * dy < 0.1 || (w, h) == (1, 1);
            Rgba(if inside { [0, 0, 0, 255] } else { [255; 4] })
        });
        let (ip, mp) = (
            save(&img, dir.path(), "i.png"),
            save(&mask, dir.path(), "m.png"),
        );
        let out = dir.path().join(format!("c{w}x{h}.png"));
        spn_ok(&[
            "complete",
            "--model",
            s(&model),
            "--image",
            s(&ip),
            "--mask",
            s(&mp),
            "--out",
            s(&out),
        ]);
        let got = image::open(&out).unwrap();
        assert!(got.color().has_alpha(), "RGBA in must give RGBA out");
        let got = got.to_rgba8();
        assert_eq!(got.dimensions(), (w, h));
        for (x, y, p) in got.enumerate_pixels() {
            if mask.get_pixel(x, y).0[0] == 255 {
                assert_eq!(
                    p,
                    img.get_pixel(x, y),
                    "{w}x{h}: known pixel ({x},{y}) changed"
                );
            } else {
                assert_eq!(p.0[3], 255, "{w}x{h}: drawn pixel ({x},{y}) is not opaque");
            }
        }
    }
}

#[test]
fn upscale_depth_keeps_top_bits_and_alpha_at_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    for (w, h) in [(50, 30), (3, 17)] {
        // Opaque RGB: the top 3 bits of every value come back exactly.
        let rgb = DynamicImage::ImageRgba8(sprite(w, h)).to_rgb8();
        let p = dir.path().join("rgb.png");
        rgb.save(&p).unwrap();
        let out = dir.path().join("d.png");
        spn_ok(&[
            "upscale-depth",
            "--model",
            s(&model),
            "--image",
            s(&p),
            "--out",
            s(&out),
        ]);
        let got = image::open(&out).unwrap();
        assert!(!got.color().has_alpha());
        let got = got.to_rgb8();
        assert_eq!(got.dimensions(), (w, h));
        for (a, b) in rgb.as_raw().iter().zip(got.as_raw()) {
            assert_eq!(a >> 5, b >> 5, "{w}x{h}: top bits changed");
        }
        // RGBA: alpha comes back exactly, and opaque pixels keep their top bits.
        let rgba = sprite(w, h);
        let p = save(&rgba, dir.path(), "rgba.png");
        let out = dir.path().join("d.webp");
        spn_ok(&[
            "upscale-depth",
            "--model",
            s(&model),
            "--image",
            s(&p),
            "--out",
            s(&out),
        ]);
        let got = image::open(&out).unwrap().to_rgba8();
        for (a, b) in rgba.pixels().zip(got.pixels()) {
            assert_eq!(a.0[3], b.0[3], "alpha changed (WebP keeps alpha)");
            if a.0[3] == 255 {
                assert!((0..3).all(|c| a.0[c] >> 5 == b.0[c] >> 5));
            }
            if a.0[3] == 0 {
                assert_eq!(a, b, "a clear pixel is returned as it was");
            }
        }
    }
}

#[test]
fn upscale_size_puts_the_small_image_at_slice_0_at_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    for (w, h) in [(13, 7), (1, 1), (40, 33)] {
        let small = sprite(w, h);
        let p = save(&small, dir.path(), "small.png");
        let out = dir.path().join("u.png");
        spn_ok(&[
            "upscale-size",
            "--model",
            s(&model),
            "--image",
            s(&p),
            "--out",
            s(&out),
        ]);
        let got = image::open(&out).unwrap().to_rgba8();
        assert_eq!(got.dimensions(), (2 * w, 2 * h), "S = 2 times the size");
        for (x, y, p) in small.enumerate_pixels() {
            assert_eq!(got.get_pixel(2 * x, 2 * y), p, "slice 0 at ({x},{y})");
        }
    }
}

#[test]
fn generate_takes_a_width_and_a_height() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.png");
    let model = tiny();
    spn_ok(&[
        "generate",
        "--model",
        s(&model),
        "--width",
        "45",
        "--height",
        "19",
        "--out",
        s(&out),
    ]);
    assert_eq!(image::open(&out).unwrap().dimensions(), (45, 19));
}

/// The result depends on (seed, window) only: not on the batch size, which changes how windows are batched.
#[test]
fn a_canvas_does_not_depend_on_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let img = save(&sprite(41, 29), dir.path(), "i.png");
    for job in ["upscale-depth", "upscale-size"] {
        let run = |bs: &str| {
            let out = dir.path().join(format!("{job}-{bs}.png"));
            spn_ok(&[
                job,
                "--model",
                s(&model),
                "--image",
                s(&img),
                "--out",
                s(&out),
                "--batch-size",
                bs,
            ]);
            image::open(&out).unwrap().to_rgba8()
        };
        assert!(run("1") == run("64"), "{job}: batch 1 and batch 64 differ");
    }
    let gen = |bs: &str| {
        let out = dir.path().join(format!("g-{bs}.png"));
        spn_ok(&[
            "generate",
            "--model",
            s(&model),
            "--width",
            "30",
            "--height",
            "20",
            "--out",
            s(&out),
            "--batch-size",
            bs,
        ]);
        image::open(&out).unwrap().to_rgb8()
    };
    assert!(gen("1") == gen("7"));
}

#[test]
fn bad_canvas_sizes_are_refused_naming_the_sizes_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let out = dir.path().join("x.png");
    let img = save(&sprite(20, 10), dir.path(), "i.png");
    let mask = save(&sprite(10, 20), dir.path(), "m.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["generate", "--width", "70000", "--height", "8"],
            "70000x8",
        ),
        (vec!["generate", "--width", "0", "--height", "8"], "0x8"),
        (
            vec!["generate", "--width", "60000", "--height", "60000"],
            "60000x60000",
        ),
        (
            vec!["complete", "--image", s(&img), "--mask", s(&mask)],
            "10x20",
        ),
        (
            vec!["upscale-size", "--image", s(&img), "--overlap", "9"],
            "overlap 9",
        ),
    ];
    for (args, says) in cases {
        let mut a = args.clone();
        a.extend(["--model", s(&model), "--out", s(&out)]);
        let err = spn_err(&a);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}

/// The held-out emoji of `make data` used for the seam test: the first few by name.
fn heldout_emoji(n: usize) -> Vec<PathBuf> {
    let dir = root().join("data/emoji/heldout");
    assert!(
        dir.is_dir(),
        "{} is missing: run `make data`",
        dir.display()
    );
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    v.into_iter().step_by(37).take(n).collect()
}

/// Smooth gradients of several directions and ranges. One gradient is not enough to measure seams: where a
/// channel crosses a multiple of 32 (an MSB boundary of the 3-bit stages) a model draws differently, and
/// whether such a line falls on a window border depends on the gradient: the stop-13 bundle's depth upscaling
/// measures 1.02 on the first and 1.54 on the second, 1.06 pooled over the four (models/README.md, stop 20).
fn gradients(n: u32) -> Vec<image::RgbImage> {
    let ramp = |f: fn(u32, u32, u32) -> [u32; 3]| {
        image::RgbImage::from_fn(n, n, move |x, y| {
            image::Rgb(f(x, y, n).map(|v| v.min(255) as u8))
        })
    };
    vec![
        ramp(|x, y, n| [x * 255 / n, y * 255 / n, 128]),
        ramp(|x, y, n| [x * 200 / n + 10, y * 180 / n + 40, 128]),
        ramp(|x, y, n| {
            [
                (x + y) * 255 / (2 * n),
                200 - (x + y) * 150 / (2 * n),
                x * 100 / n + 60,
            ]
        }),
        ramp(|_, y, n| [60, y * 255 / n, 200 - y * 150 / n]),
    ]
}

/// Seams (docs/design.md section 8): on smooth gradients, flat colours (each pooled over four, since a 256x256
/// canvas has few borders and one picture's content can fall on them; flat colours with four seeds each) and
/// held-out emoji scaled up (pooled over six, two seeds each: one emoji's ratio moves from 1.65 to 1.29 with the seed, models/README.md "Canvases"),
/// neighbours across window borders differ by at most 20% more than neighbours of the same kind inside
/// windows, for both upscalings, with the bundled model and the default overlap. For depth upscaling, a pair
/// whose kept top bits differ is of another kind than one whose bits agree (`seams::Kept`): a gradient's band
/// edge that falls on a border is the input's step, not a seam. Run through the `spn` tool; which window drew
/// each pixel comes from the library's plan for the same job.
#[test]
fn upscaling_a_large_canvas_leaves_no_seams() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = root().join("models/default.spn");
    let model = spn::Pipeline::load(&model_path, tch::Device::Cpu).unwrap();
    let sampler = Sampler::new(&model, SampleOptions::default()).unwrap();
    let scale = model.config().scale as usize;
    let mut emoji = Vec::new();
    for e in heldout_emoji(6) {
        let rgb = spn::data::load_rgb(&e).unwrap();
        let big = image::imageops::resize(&rgb, 256, 256, image::imageops::FilterType::Lanczos3);
        emoji.push(DynamicImage::ImageRgb8(big));
    }
    let gradients: Vec<DynamicImage> = gradients(256)
        .into_iter()
        .map(DynamicImage::ImageRgb8)
        .collect();
    // Flat colour, the commonest background a designer brings: each window must continue the colour that the
    // windows before it drew.
    let flat: Vec<DynamicImage> = [
        [60, 128, 200],
        [230, 110, 40],
        [250, 250, 245],
        [20, 90, 50],
    ]
    .into_iter()
    .map(|c| DynamicImage::ImageRgb8(image::RgbImage::from_pixel(256, 256, image::Rgb(c))))
    .collect();
    for (set, inputs, seeds) in [
        ("gradients", &gradients, &["0"][..]),
        // Four seeds: on flat colour a draw leaves a few dozen specks in 65,536 pixels, and whether they fall on
        // a border decides one run's ratio (0 to 2.4 for one colour and seed, with both the stop-27 and the
        // stop-29 bundles; size upscaling pooled over these four seeds: 0.57 and 0.88; stop 29's seed 0 alone:
        // 1.55, models/README.md).
        ("flat colours", &flat, &["0", "1", "2", "3"][..]),
        ("held-out emoji", &emoji, &["0", "1"][..]),
    ] {
        for job in ["upscale-depth", "upscale-size"] {
            // (across sum, matched inside sum) pooled over the set.
            let (mut a, mut i) = (0.0, 0.0);
            for (big, seed) in inputs
                .iter()
                .flat_map(|b| seeds.iter().map(move |sd| (b, *sd)))
            {
                // Size upscaling starts from the 64x64 image whose 4x upscale is the 256x256 canvas.
                let small = big.resize_exact(64, 64, image::imageops::FilterType::Lanczos3);
                let input = if job == "upscale-depth" { big } else { &small };
                let ip = dir.path().join("in.png");
                input.save(&ip).unwrap();
                let out = dir.path().join(format!("{job}.png"));
                spn_ok(&[
                    job,
                    "--model",
                    s(&model_path),
                    "--image",
                    s(&ip),
                    "--out",
                    s(&out),
                    "--seed",
                    seed,
                ]);
                let got = image::open(&out).unwrap().to_rgb8();
                let j = match job {
                    "upscale-depth" => CanvasJob::UpscaleDepth { image: input },
                    _ => CanvasJob::UpscaleSize {
                        image: input,
                        factor: None,
                    },
                };
                let owners = sampler.window_owners(&j).unwrap();
                let m = seams::measure_job(&got, &owners, &j, scale, model.config().msb_bits)
                    .expect("a 256x256 canvas has borders");
                eprintln!("{job} on {set}, seed {seed}: ratio {:.3} ({m:?})", m.ratio);
                a += m.across * m.pairs_across as f64;
                i += m.inside_matched * m.pairs_across as f64;
            }
            eprintln!("{job} on {set}: pooled ratio {:.3}", a / i);
            assert!(a / i <= 1.2, "{job} on {set}: seams, ratio {:.3}", a / i);
        }
    }
}
