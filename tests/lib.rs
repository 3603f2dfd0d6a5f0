//! Helpers for the end-to-end tests: run the built `spn` binary the way a user does.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// The `spn` binary of the same profile as this test (built by `make test` before the tests run).
pub fn spn_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = dir.join("spn");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release --bins`)",
        bin.display()
    );
    bin
}

/// Runs a command and returns its stdout and stderr, failing the test with both when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

pub fn spn(args: &[&str]) -> Output {
    Command::new(spn_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run spn")
}

/// Runs `spn` and returns stdout, failing the test with stderr when it fails.
pub fn spn_ok(args: &[&str]) -> String {
    let out = spn(args);
    assert!(
        out.status.success(),
        "spn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `spn`, expects failure, returns stderr.
pub fn spn_err(args: &[&str]) -> String {
    let out = spn(args);
    assert!(
        !out.status.success(),
        "spn {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "spn {args:?} panicked: {err}");
    err
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Trains a tiny 8x8 model on the fixtures for `steps` steps into `dir/name`.
pub fn tiny_model(dir: &Path, name: &str, steps: u32) -> PathBuf {
    let p = dir.join(name);
    let data = fixtures().join("emoji8");
    let steps = steps.to_string();
    spn_ok(&[
        "train",
        "--data",
        s(&data),
        "--preset",
        "tiny",
        "--steps",
        &steps,
        "--batch-size",
        "8",
        "--out",
        s(&p),
        "--eval-images",
        "0",
        "--device",
        "cpu",
    ]);
    p
}

/// Completion with the left half of an 8x8 image known must return that half unchanged (RGB or RGBA).
pub fn assert_left_half_kept<P>(
    input: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    output: &image::ImageBuffer<P, Vec<P::Subpixel>>,
) where
    P: image::Pixel + PartialEq + std::fmt::Debug,
{
    for y in 0..8 {
        for x in 0..4 {
            assert_eq!(
                input.get_pixel(x, y),
                output.get_pixel(x, y),
                "known pixel ({x},{y}) changed"
            );
        }
    }
}

/// Kinds of mask pixel for the mask-rule tests, with whether the rule (`spn::data::mask_flags`) calls each
/// known: opaque white, opaque red (dark by luma), light gray, translucent white (alpha 100), mostly opaque
/// white (alpha 200), black, yellow (light by luma), clear.
pub const MASK_KINDS: [([u8; 4], bool); 8] = [
    ([255, 255, 255, 255], true),
    ([255, 0, 0, 255], false),
    ([200, 200, 200, 255], true),
    ([255, 255, 255, 100], false),
    ([255, 255, 255, 200], true),
    ([0, 0, 0, 255], false),
    ([255, 255, 0, 255], true),
    ([0, 0, 0, 0], false),
];

/// A `w x h` RGBA mask: the top half one kind of `MASK_KINDS` per column (repeating), the bottom half black.
pub fn mask_rule_fixture(w: u32, h: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba(if y < h / 2 {
            MASK_KINDS[x as usize % 8].0
        } else {
            [0, 0, 0, 255]
        })
    })
}
