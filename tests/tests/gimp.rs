//! The GIMP plug-in, headless: every procedure through `gimp-console-2.10 -i -b` with Script-Fu.
//! `make test` installs GIMP and libgimp2.0-dev first.
use spn_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A GIMP profile folder with the plug-in installed, and a tiny 8x8 model.
fn setup() -> &'static (tempfile::TempDir, PathBuf) {
    static S: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("profile/plug-ins");
        let out = Command::new("make")
            .args(["-s", "-C"])
            .arg(root().join("plugins/gimp"))
            .arg("install")
            .arg(format!("GIMP_PLUGIN_DIR={}", plugins.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "plug-in build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let model = tiny_model(dir.path(), "tiny.spn", 20);
        (dir, model)
    })
}

/// Runs Script-Fu in a fresh working folder; returns (folder, combined output).
fn gimp(script: &str) -> (tempfile::TempDir, String) {
    gimp_on(script, None)
}

/// `gimp` with `input` (or the fixture emoji) as in.png.
fn gimp_on(script: &str, input: Option<&image::RgbaImage>) -> (tempfile::TempDir, String) {
    gimp_with(script, input, &[])
}

/// `gimp_on` with more images in the working folder.
fn gimp_with(
    script: &str,
    input: Option<&image::RgbaImage>,
    more: &[(&str, &image::RgbaImage)],
) -> (tempfile::TempDir, String) {
    let (dir, _) = setup();
    let work = tempfile::tempdir().unwrap();
    for (name, img) in more {
        img.save(work.path().join(name)).unwrap();
    }
    match input {
        Some(img) => img.save(work.path().join("in.png")).unwrap(),
        None => {
            std::fs::copy(
                fixtures().join("emoji8/1f98a.png"),
                work.path().join("in.png"),
            )
            .unwrap();
        }
    }
    let out = Command::new("gimp-console-2.10")
        .args(["-i", "-d", "-f", "-b", script, "-b", "(gimp-quit 0)"])
        .env("GIMP2_DIRECTORY", dir.path().join("profile"))
        .current_dir(work.path())
        .output()
        .expect("gimp-console-2.10 is not installed: run `make test`, which installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "gimp-console failed: {text}");
    assert!(
        !text.contains("crashed") && !text.contains("Segmentation"),
        "the plug-in crashed: {text}"
    );
    (work, text)
}

fn model() -> String {
    setup().1.display().to_string()
}

fn load(p: &Path) -> image::RgbaImage {
    image::open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .to_rgba8()
}

const LOAD: &str = r#"(image (car (gimp-file-load RUN-NONINTERACTIVE "in.png" "in.png"))) (drawable (car (gimp-image-get-active-drawable image)))"#;

#[test]
fn generate_makes_layers_named_by_seed() {
    let script = format!(
        r#"(let* ((image (car (plug-in-spn-generate RUN-NONINTERACTIVE "{}" 2 7 1.0))) (layers (cadr (gimp-image-get-layers image))))
             (gimp-message (string-append "layers: " (car (gimp-item-get-name (aref layers 0))) " / " (car (gimp-item-get-name (aref layers 1)))))
             (file-png-save-defaults RUN-NONINTERACTIVE image (aref layers 0) "gen0.png" "gen0.png")
             (file-png-save-defaults RUN-NONINTERACTIVE image (aref layers 1) "gen1.png" "gen1.png"))"#,
        model()
    );
    let (work, text) = gimp(&script);
    assert!(
        text.contains("spn seed 7") && text.contains("spn seed 8"),
        "{text}"
    );
    for f in ["gen0.png", "gen1.png"] {
        assert_eq!(load(&work.path().join(f)).dimensions(), (8, 8));
    }
}

#[test]
fn complete_keeps_everything_outside_the_selection() {
    let script = format!(
        r#"(let* ({LOAD}) (gimp-image-select-rectangle image CHANNEL-OP-REPLACE 4 0 4 8)
             (plug-in-spn-complete RUN-NONINTERACTIVE image drawable "{}" 3 1.0)
             (gimp-file-save RUN-NONINTERACTIVE image drawable "out.png" "out.png"))"#,
        model()
    );
    let (work, _) = gimp(&script);
    let (a, b) = (
        load(&work.path().join("in.png")),
        load(&work.path().join("out.png")),
    );
    assert_eq!(b.dimensions(), (8, 8));
    // The selection is the right half: the left half is known.
    assert_left_half_kept(&a, &b);
}

/// `plug-in-spn-upscale-size-mean` (ABI 5's mean pick): the same image whatever the seed, slice 0 kept.
#[test]
fn the_mean_upscale_is_the_same_for_every_seed() {
    let script = format!(
        r#"(let* ({LOAD})
             (let* ((a (car (plug-in-spn-upscale-size-mean RUN-NONINTERACTIVE image drawable "{m}" 1 1.0)))
                    (b (car (plug-in-spn-upscale-size-mean RUN-NONINTERACTIVE image drawable "{m}" 2 1.0))))
               (file-png-save-defaults RUN-NONINTERACTIVE a (car (gimp-image-get-active-drawable a)) "a.png" "a.png")
               (file-png-save-defaults RUN-NONINTERACTIVE b (car (gimp-image-get-active-drawable b)) "b.png" "b.png")))"#,
        m = model()
    );
    let (work, _) = gimp(&script);
    let (input, a, b) = (
        load(&work.path().join("in.png")),
        load(&work.path().join("a.png")),
        load(&work.path().join("b.png")),
    );
    assert_eq!(a, b, "the mean pick does not depend on the seed");
    let s = a.width() / input.width();
    assert!(s > 1, "{}x{}", a.width(), a.height());
    for (x, y, p) in input.enumerate_pixels().filter(|(_, _, p)| p[3] == 255) {
        assert_eq!(
            &a.get_pixel(s * x, s * y).0[..3],
            &p.0[..3],
            "slice 0 at ({x}, {y})"
        );
    }
}

/// `plug-in-spn-upscale-size-by` (ABI 6's factor): 3 times larger whatever the model's scale, every input
/// pixel kept at (3x, 3y); the mean pick as asked; factor 1 refused with libspn's message as a GIMP message.
#[test]
fn upscaling_by_a_factor_keeps_the_input_at_every_factor_th_pixel() {
    let script = format!(
        r#"(let* ({LOAD})
             (let* ((a (car (plug-in-spn-upscale-size-by RUN-NONINTERACTIVE image drawable "{m}" 1 1.0 3 1)))
                    (b (car (plug-in-spn-upscale-size-by RUN-NONINTERACTIVE image drawable "{m}" 2 1.0 3 1))))
               (file-png-save-defaults RUN-NONINTERACTIVE a (car (gimp-image-get-active-drawable a)) "a.png" "a.png")
               (file-png-save-defaults RUN-NONINTERACTIVE b (car (gimp-image-get-active-drawable b)) "b.png" "b.png")))"#,
        m = model()
    );
    let (work, _) = gimp(&script);
    let (input, a, b) = (
        load(&work.path().join("in.png")),
        load(&work.path().join("a.png")),
        load(&work.path().join("b.png")),
    );
    assert_eq!(a.dimensions(), (3 * input.width(), 3 * input.height()));
    assert_eq!(a, b, "the mean pick does not depend on the seed");
    for (x, y, p) in input.enumerate_pixels().filter(|(_, _, p)| p[3] == 255) {
        assert_eq!(a.get_pixel(3 * x, 3 * y), p, "input pixel ({x}, {y})");
    }
    let script = format!(
        r#"(let* ({LOAD}) (plug-in-spn-upscale-size-by RUN-NONINTERACTIVE image drawable "{}" 1 1.0 1 0))"#,
        model()
    );
    let (_, text) = gimp(&script);
    assert!(
        text.contains("upscaling failed") && text.contains("upscale_factor"),
        "{text}"
    );
}

#[test]
fn upscale_depth_keeps_the_top_bits_and_size_makes_a_bigger_image() {
    let script = format!(
        r#"(let* ({LOAD}) (plug-in-spn-upscale-depth RUN-NONINTERACTIVE image drawable "{m}" 1 1.0)
             (gimp-file-save RUN-NONINTERACTIVE image drawable "depth.png" "depth.png")
             (gimp-image-scale image 4 4)
             (let* ((big (car (plug-in-spn-upscale-size RUN-NONINTERACTIVE image (car (gimp-image-get-active-drawable image)) "{m}" 1 1.0))))
               (file-png-save-defaults RUN-NONINTERACTIVE big (car (gimp-image-get-active-drawable big)) "big.png" "big.png")
               (gimp-file-save RUN-NONINTERACTIVE image (car (gimp-image-get-active-drawable image)) "small.png" "small.png")))"#,
        m = model()
    );
    // The fixture emoji with its left quarter transparent and a half-transparent column.
    let mut input = load(&fixtures().join("emoji8/1f98a.png"));
    for (x, _, p) in input.enumerate_pixels_mut() {
        p[3] = match x {
            0 | 1 => 0,
            2 => 100,
            _ => 255,
        };
    }
    let (work, _) = gimp_on(&script, Some(&input));
    let (a, d) = (
        load(&work.path().join("in.png")),
        load(&work.path().join("depth.png")),
    );
    for (p, q) in a.pixels().zip(d.pixels()) {
        // Depth upscaling changes colours only: transparent stays transparent.
        assert_eq!(p[3], q[3], "alpha changed: {p:?} -> {q:?}");
        // The layer's own colours keep their top 3 bits, translucent ones too (not blended onto white).
        // (Fully transparent pixels may lose their colour in the PNG export.)
        if p[3] > 0 {
            for c in 0..3 {
                assert_eq!(p[c] >> 5, q[c] >> 5, "{p:?} -> {q:?}");
            }
        }
    }
    let (small, big) = (
        load(&work.path().join("small.png")),
        load(&work.path().join("big.png")),
    );
    assert_eq!(big.dimensions(), (8, 8));
    for y in 0..4 {
        for x in 0..4 {
            let (sp, bp) = (small.get_pixel(x, y), big.get_pixel(2 * x, 2 * y));
            if sp[3] == 255 {
                assert_eq!(&sp.0[..3], &bp.0[..3], "slice 0 differs at ({x},{y})");
            }
        }
    }
}

#[test]
fn errors_are_gimp_messages_not_crashes() {
    let script = format!(
        r#"(let* ({LOAD}) (plug-in-spn-upscale-depth RUN-NONINTERACTIVE image drawable "/nonexistent/model.spn" 1 1.0))"#
    );
    let (_, text) = gimp(&script);
    assert!(text.contains("cannot load the model"), "{text}");
    let script = format!(
        r#"(let* ({LOAD}) (gimp-image-convert-grayscale image) (plug-in-spn-upscale-depth RUN-NONINTERACTIVE image (car (gimp-image-get-active-drawable image)) "{}" 1 1.0))"#,
        model()
    );
    let (_, text) = gimp(&script);
    assert!(
        text.contains("RGB layers") && text.contains("grayscale"),
        "{text}"
    );
    // A mask layer of another size than the layer: the message names both.
    let script = format!(
        r#"(let* ({LOAD} (m (car (gimp-layer-new image 5 5 RGBA-IMAGE "m" 100 LAYER-MODE-NORMAL))))
             (gimp-image-insert-layer image m 0 -1)
             (plug-in-spn-complete-mask RUN-NONINTERACTIVE image drawable "{}" 1 1.0 m))"#,
        model()
    );
    let (_, text) = gimp(&script);
    assert!(text.contains("5x5") && text.contains("8x8"), "{text}");
}

/// Layers of any size (docs/design.md section 8): Complete Selection on an 800x600 layer with an elliptical
/// selection changes nothing outside it and draws inside; Generate takes a width and a height; both
/// upscalings take any layer.
#[test]
fn every_procedure_works_on_a_layer_of_any_size() {
    let big = image::RgbaImage::from_fn(800, 600, |x, y| {
        image::Rgba([(x * 255 / 800) as u8, (y * 255 / 600) as u8, 120, 255])
    });
    // Ellipse at (300, 200), 160 x 100, without antialiasing.
    let script = format!(
        r#"(let* ({LOAD}) (gimp-context-set-antialias FALSE) (gimp-context-set-feather FALSE)
             (gimp-image-select-ellipse image CHANNEL-OP-REPLACE 300 200 160 100)
             (plug-in-spn-complete RUN-NONINTERACTIVE image drawable "{m}" 3 1.0)
             (gimp-file-save RUN-NONINTERACTIVE image drawable "out.png" "out.png")
             (let* ((g (car (plug-in-spn-generate-sized RUN-NONINTERACTIVE "{m}" 1 4 1.0 21 13))))
               (file-png-save-defaults RUN-NONINTERACTIVE g (car (gimp-image-get-active-drawable g)) "gen.png" "gen.png"))
             (gimp-selection-none image)
             (gimp-image-scale image 30 20)
             (plug-in-spn-upscale-depth RUN-NONINTERACTIVE image (car (gimp-image-get-active-drawable image)) "{m}" 1 1.0)
             (let* ((u (car (plug-in-spn-upscale-size RUN-NONINTERACTIVE image (car (gimp-image-get-active-drawable image)) "{m}" 1 1.0))))
               (file-png-save-defaults RUN-NONINTERACTIVE u (car (gimp-image-get-active-drawable u)) "up.png" "up.png")))"#,
        m = model()
    );
    let (work, text) = gimp_on(&script, Some(&big));
    let out = load(&work.path().join("out.png"));
    assert_eq!(out.dimensions(), (800, 600), "{text}");
    let (mut inside, mut drawn) = (0, 0);
    for (x, y, p) in out.enumerate_pixels() {
        let (u, v) = (
            (x as f64 + 0.5 - 380.0) / 80.0,
            (y as f64 + 0.5 - 250.0) / 50.0,
        );
        let d = u * u + v * v;
        if d > 1.1 {
            assert_eq!(
                p,
                big.get_pixel(x, y),
                "({x},{y}) outside the selection changed"
            );
        } else if d < 0.9 {
            inside += 1;
            drawn += (p != big.get_pixel(x, y)) as usize;
        }
    }
    assert!(
        drawn * 2 > inside,
        "only {drawn} of {inside} pixels inside the selection were drawn"
    );
    assert_eq!(load(&work.path().join("gen.png")).dimensions(), (21, 13));
    assert_eq!(load(&work.path().join("up.png")).dimensions(), (60, 40));
}

/// The one mask rule through GIMP: `plug-in-spn-complete-mask` with an RGBA mask layer draws what `spn
/// complete` draws with the same mask file (and the C ABI, `tests/tests/c_abi.rs`), and keeps every pixel
/// the rule calls known exactly.
#[test]
fn a_mask_layer_completes_as_the_cli_does() {
    let mask = mask_rule_fixture(8, 8);
    let script = format!(
        r#"(let* ({LOAD} (m (car (gimp-file-load-layer RUN-NONINTERACTIVE image "mask.png"))))
             (gimp-image-insert-layer image m 0 -1)
             (plug-in-spn-complete-mask RUN-NONINTERACTIVE image drawable "{}" 5 1.0 m)
             (gimp-image-remove-layer image m)
             (gimp-file-save RUN-NONINTERACTIVE image drawable "out.png" "out.png"))"#,
        model()
    );
    let (work, _) = gimp_with(&script, None, &[("mask.png", &mask)]);
    let w = work.path();
    let cli = w.join("cli.png");
    spn_ok(&[
        "complete",
        "--model",
        &model(),
        "--image",
        s(&w.join("in.png")),
        "--mask",
        s(&w.join("mask.png")),
        "--seed",
        "5",
        "--out",
        s(&cli),
        "--device",
        "cpu",
    ]);
    let flat = |p: &Path| spn::data::load_rgb(p).unwrap();
    assert_eq!(
        flat(&w.join("out.png")).as_raw(),
        flat(&cli).as_raw(),
        "GIMP and the CLI completed differently"
    );
    let (input, out) = (load(&w.join("in.png")), load(&w.join("out.png")));
    for x in [0u32, 2, 4, 6] {
        for y in 0..4 {
            assert_eq!(
                input.get_pixel(x, y),
                out.get_pixel(x, y),
                "known ({x}, {y}) changed"
            );
        }
    }
}
