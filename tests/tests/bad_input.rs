//! Bad input gives a clear error and a nonzero exit code, never a panic.
use spn_tests::*;
use std::sync::OnceLock;

/// A small trained-for-one-step bundle shared by the tests.
fn bundle() -> &'static std::path::Path {
    static B: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    &B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = tiny_model(dir.path(), "m.spn", 1);
        (dir, p)
    })
    .1
}

#[test]
fn unreadable_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"this is not a png").unwrap();
    let err = spn_err(&["score", "--model", s(bundle()), "--image", s(&bad)]);
    assert!(err.contains("cannot read image"), "{err}");
    let err = spn_err(&[
        "score",
        "--model",
        s(bundle()),
        "--image",
        s(&dir.path().join("missing.png")),
    ]);
    assert!(err.contains("cannot read image"), "{err}");
    // A data folder with a broken image.
    std::fs::copy(
        fixtures().join("emoji8/1f600.png"),
        dir.path().join("ok.png"),
    )
    .unwrap();
    let err = spn_err(&["eval", "--model", s(bundle()), "--data", s(dir.path())]);
    assert!(err.contains("bad.png"), "{err}");
}

/// A PNG file that says it is a `w` x `h` 8-bit grey image, with no pixel data: all a reader needs to
/// refuse it.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let crc32 = |bytes: &[u8]| {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    let mut out = vec![137, 80, 78, 71, 13, 10, 26, 10];
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

/// An image too large to read is refused from its header's size, before its pixels are decoded, as an
/// image or as a mask.
#[test]
fn images_too_large_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    std::fs::write(&big, png_header(20_000, 20_000)).unwrap();
    let img = fixtures().join("emoji8/1f600.png");
    let out = dir.path().join("out.png");
    for args in [
        vec!["score", "--model", s(bundle()), "--image", s(&big)],
        vec![
            "complete",
            "--model",
            s(bundle()),
            "--image",
            s(&img),
            "--mask",
            s(&big),
            "--out",
            s(&out),
        ],
    ] {
        let start = std::time::Instant::now();
        let err = spn_err(&args);
        assert!(
            err.contains("20000x20000 pixels") && err.contains("1024 MiB"),
            "{err}"
        );
        assert!(start.elapsed().as_secs() < 20, "{args:?}: slow");
    }
}

#[test]
fn wrong_size_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    let mut c = spn::PipelineConfig::preset("tiny").unwrap();
    c.height = 10;
    c.scale = 4;
    std::fs::write(&cfg, serde_json::to_string(&c).unwrap()).unwrap();
    let out = dir.path().join("m.spn");
    let err = spn_err(&[
        "train",
        "--data",
        s(&fixtures().join("emoji8")),
        "--config",
        s(&cfg),
        "--steps",
        "1",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("scale 4 must divide the image size 10x8"),
        "{err}"
    );
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "height = \"tall\"").unwrap();
    let err = spn_err(&[
        "train",
        "--data",
        s(&fixtures().join("emoji8")),
        "--config",
        s(&cfg),
        "--steps",
        "1",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("invalid configuration"), "{err}");
    let err = spn_err(&[
        "train",
        "--data",
        s(&fixtures().join("emoji8")),
        "--preset",
        "huge",
        "--steps",
        "1",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("unknown preset"), "{err}");
}

#[test]
fn truncated_garbage_and_missing_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(bundle()).unwrap();
    for (name, data) in [
        ("trunc.spn", bytes[..bytes.len() / 2].to_vec()),
        ("head.spn", bytes[..20].to_vec()),
        (
            "garbage.spn",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all".to_vec(),
        ),
        ("empty.spn", vec![]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let err = spn_err(&["info", "--model", s(&p)]);
        assert!(err.contains("bad model bundle"), "{name}: {err}");
        let err = spn_err(&[
            "score",
            "--model",
            s(&p),
            "--image",
            s(&fixtures().join("emoji8/1f600.png")),
        ]);
        assert!(err.contains("bad model bundle"), "{name}: {err}");
    }
    let err = spn_err(&["info", "--model", s(&dir.path().join("nope.spn"))]);
    assert!(err.contains("cannot read"), "{err}");
}

/// Runs `spn`, expects it to fail within `secs` seconds (it is killed otherwise), returns stderr.
fn spn_err_within(args: &[&str], secs: u64) -> String {
    use std::io::Read;
    let mut child = std::process::Command::new(spn_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run spn");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spn {args:?} still ran after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "spn {args:?} should have failed");
    assert!(!err.contains("panicked"), "spn {args:?} panicked: {err}");
    err
}

/// A model path that is not a bundle file is refused at once: a FIFO with no writer (opening it would wait
/// for one), a device (read until memory runs out), a folder.
#[test]
fn model_paths_that_are_not_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.spn");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for p in [s(&fifo), "/dev/zero", "/dev/urandom", s(dir.path())] {
        let err = spn_err_within(&["info", "--model", p], 30);
        assert!(
            err.contains("bad model bundle") && err.contains("not a regular file"),
            "{p}: {err}"
        );
    }
}

/// Rewrites one metadata entry of a safetensors file.
fn with_meta(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"][key] = serde_json::Value::String(value.into());
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn bundle_from_a_newer_format_version_or_with_a_mismatched_config() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(bundle()).unwrap();
    let p = dir.path().join("new.spn");
    std::fs::write(&p, with_meta(&bytes, "format_version", "99")).unwrap();
    let err = spn_err(&["info", "--model", s(&p)]);
    assert!(
        err.contains("unsupported bundle format version 99"),
        "{err}"
    );
    // Weights that do not fit the config.
    let mut c = spn::PipelineConfig::preset("tiny").unwrap();
    c.net.channels = 32;
    let p = dir.path().join("mismatch.spn");
    std::fs::write(
        &p,
        with_meta(&bytes, "config", &serde_json::to_string(&c).unwrap()),
    )
    .unwrap();
    let err = spn_err(&["info", "--model", s(&p)]);
    assert!(
        err.contains("bad model bundle") && err.contains("shape"),
        "{err}"
    );
    // Sanity: the untouched bundle loads.
    spn_ok(&["info", "--model", s(bundle())]);
}

#[test]
fn bad_arguments() {
    let err = spn_err(&[
        "eval",
        "--model",
        s(bundle()),
        "--data",
        "/nonexistent/folder",
    ]);
    assert!(err.contains("cannot read data folder"), "{err}");
    let err = spn_err(&["info", "--model", s(bundle()), "--device", "tpu"]);
    assert!(err.contains("unknown device"), "{err}");
}

/// Where output goes is checked before the model runs, errors name the path once, and nothing is clobbered.
#[test]
fn outputs_are_checked_first_and_never_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let m = s(bundle());
    std::fs::write(d("file"), b"keep me").unwrap();
    // A folder that cannot be made: the error names it, once.
    let err = spn_err(&[
        "generate",
        "--model",
        m,
        "--count",
        "2",
        "--out",
        s(&d("file/x")),
    ]);
    assert!(
        err.contains("file/x") && err.matches("Not a directory").count() <= 1,
        "{err}"
    );
    let err = spn_err(&["generate", "--model", m, "--out", s(&d("file"))]);
    assert!(err.contains("not a folder"), "{err}");
    // --out FILE.png is a file for one image, refused for several.
    spn_ok(&["generate", "--model", m, "--out", s(&d("one.png"))]);
    assert!(image::open(d("one.png")).is_ok());
    let err = spn_err(&[
        "generate",
        "--model",
        m,
        "--count",
        "2",
        "--out",
        s(&d("two.png")),
    ]);
    assert!(err.contains("--count is 2"), "{err}");
    // Formats follow the extension; unknown ones are refused before sampling.
    let img = s(&fixtures().join("emoji8/1f600.png")).to_string();
    for (name, format) in [
        ("o.jpg", image::ImageFormat::Jpeg),
        ("o.webp", image::ImageFormat::WebP),
    ] {
        spn_ok(&[
            "upscale-depth",
            "--model",
            m,
            "--image",
            &img,
            "--out",
            s(&d(name)),
        ]);
        assert_eq!(image::ImageFormat::from_path(d(name)).unwrap(), format);
        assert!(
            image::load(
                std::io::BufReader::new(std::fs::File::open(d(name)).unwrap()),
                format
            )
            .is_ok(),
            "{name}"
        );
    }
    let err = spn_err(&[
        "upscale-depth",
        "--model",
        m,
        "--image",
        &img,
        "--out",
        s(&d("o.bmp")),
    ]);
    assert!(err.contains(".png, .jpg or .webp"), "{err}");
    assert!(!d("o.bmp").exists());
    // Training never replaces an existing file unless told to.
    let data = s(&fixtures().join("emoji8")).to_string();
    let train = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            &data,
            "--preset",
            "tiny",
            "--steps",
            "1",
            "--eval-images",
            "0",
            "--out",
            out,
        ];
        a.extend(extra);
        spn(&a)
    };
    let r = train(s(&d("file")), &[]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert_eq!(std::fs::read(d("file")).unwrap(), b"keep me");
    assert!(train(s(&d("file")), &["--force"]).status.success());
    assert!(spn::Pipeline::load(&d("file"), tch::Device::Cpu).is_ok());
    // Again over a finished run (its checkpoint is there too); --resume with no checkpoint says so.
    let r = train(s(&d("file")), &["--force"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::write(d("other"), b"keep me too").unwrap();
    let r = train(s(&d("other")), &["--resume"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("no checkpoint"));
    assert_eq!(std::fs::read(d("other")).unwrap(), b"keep me too");
}

#[test]
fn data_refuses_name_clashes_and_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image::open(fixtures().join("emoji8/1f600.png"))
        .unwrap()
        .to_rgb8();
    img.save(src.join("a.png")).unwrap();
    img.save(src.join("a.jpg")).unwrap();
    let out = dir.path().join("out");
    let err = spn_err(&["data", "--src", s(&src), "--out", s(&out)]);
    assert!(err.contains("a.jpg") && err.contains("a.png"), "{err}");
    std::fs::remove_file(src.join("a.jpg")).unwrap();
    // The same run twice is fine; another split would leave a.png on both sides.
    for _ in 0..2 {
        spn_ok(&[
            "data",
            "--src",
            s(&src),
            "--out",
            s(&out),
            "--heldout-percent",
            "0",
        ]);
    }
    let err = spn_err(&[
        "data",
        "--src",
        s(&src),
        "--out",
        s(&out),
        "--heldout-percent",
        "100",
    ]);
    assert!(err.contains("would not write"), "{err}");
    assert!(!out.join("heldout/a.png").exists());
    let err = spn_err(&["data", "--src", s(&src), "--out", s(&out), "--size", "0"]);
    assert!(err.contains("--size"), "{err}");
}

#[test]
fn sampling_arguments_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    for t in ["-1", "1e-50", "1e300", "nan"] {
        let err = spn_err(&[
            "generate",
            "--model",
            s(bundle()),
            "--temperature",
            t,
            "--out",
            s(&out),
        ]);
        assert!(err.contains("temperature must be > 0"), "{t}: {err}");
    }
    // A reader that goes away is not an error worth a panic message.
    let mut child = std::process::Command::new(spn_bin())
        .args(["info", "--model", s(bundle())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// `n` file names that fall in the held-out split (5%) and `n` that fall in the training split.
fn names_by_split(n: usize) -> (Vec<String>, Vec<String>) {
    let (mut held, mut train) = (vec![], vec![]);
    for i in 0.. {
        let name = format!("img{i}.png");
        if spn::data::is_heldout(std::path::Path::new(&name), 5) {
            held.push(name);
        } else {
            train.push(name);
        }
        if held.len() >= n && train.len() >= n {
            break;
        }
    }
    held.truncate(n);
    train.truncate(n);
    (held, train)
}

#[test]
fn training_inputs_are_checked_before_the_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let img = fixtures().join("emoji8/1f600.png");
    let (held, train) = names_by_split(3);
    let train_to = |data: &std::path::Path, out: &std::path::Path, more: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            s(data),
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--out",
            s(out),
            "--device",
            "cpu",
        ];
        a.extend_from_slice(more);
        spn_err(&a)
    };
    // A broken image in the held-out split (scored at the end) is found before training, not after it.
    std::fs::create_dir(d("hd")).unwrap();
    for n in &train {
        std::fs::copy(&img, d("hd").join(n)).unwrap();
    }
    std::fs::write(d("hd").join(&held[0]), b"not a png").unwrap();
    let err = train_to(&d("hd"), &d("h.spn"), &[]);
    assert!(err.contains(&held[0]), "{err}");
    assert!(!d("h.spn").exists() && !d("h.spn.ckpt").exists());
    // Every image held out: says so, rather than "no images".
    std::fs::create_dir(d("all-held")).unwrap();
    std::fs::copy(&img, d("all-held").join(&held[1])).unwrap();
    let err = train_to(&d("all-held"), &d("a.spn"), &[]);
    assert!(err.contains("held-out split"), "{err}");
    // --force over a finished run: a failing new run leaves the old checkpoint in place.
    let m = tiny_model(dir.path(), "m.spn", 1);
    let ckpt = d("m.spn.ckpt");
    assert!(ckpt.exists());
    let err = train_to(&d("no-such-dir"), &m, &["--force"]);
    assert!(err.contains("no-such-dir"), "{err}");
    let err = train_to(
        &fixtures().join("emoji8"),
        &m,
        &["--force", "--stages", "z"],
    );
    assert!(err.contains("unknown stage"), "{err}");
    assert!(
        ckpt.exists(),
        "the old run's checkpoint was removed by a run that never started"
    );
    // --out a folder: refused up front, naming it.
    std::fs::create_dir(d("outdir")).unwrap();
    let err = train_to(&fixtures().join("emoji8"), &d("outdir"), &["--force"]);
    assert!(err.contains("outdir") && err.contains("folder"), "{err}");
    assert!(!d("outdir.ckpt").exists());
    // A config with depth upscaling but no size upscaling is refused when read.
    let mut c = spn::PipelineConfig::preset("tiny").unwrap();
    c.scale = 1;
    c.msb_bits = Some(3);
    std::fs::write(d("s1.json"), serde_json::to_string(&c).unwrap()).unwrap();
    let err = spn_err(&[
        "train",
        "--data",
        s(&fixtures().join("emoji8")),
        "--config",
        s(&d("s1.json")),
        "--steps",
        "2",
        "--out",
        s(&d("s1.spn")),
    ]);
    assert!(err.contains("scale 2"), "{err}");
    // A training checkpoint given as a model says what it is.
    let err = spn_err(&["info", "--model", s(&ckpt)]);
    assert!(err.contains("training checkpoint"), "{err}");
}

#[test]
fn seeds_never_wrap_and_image_formats_spn_cannot_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let m = s(bundle());
    let max = u64::MAX.to_string();
    for cmd in ["generate", "batch"] {
        let err = spn_err(&[
            cmd,
            "--model",
            m,
            "--seed",
            &max,
            "--count",
            "2",
            "--out",
            s(&d(cmd)),
        ]);
        assert!(err.contains("largest seed"), "{err}");
    }
    spn_ok(&[
        "generate",
        "--model",
        m,
        "--seed",
        &max,
        "--out",
        s(&d("g")),
    ]);
    assert!(d(&format!("g/sample-{max}.png")).exists());
    // x.bmp is a file name in a format spn does not write, not a folder to create.
    let err = spn_err(&["generate", "--model", m, "--out", s(&d("one.bmp"))]);
    assert!(err.contains(".png"), "{err}");
    assert!(!d("one.bmp").exists());
}

#[test]
fn a_batch_folder_resumes_at_any_temperature() {
    // The manifest's temperature must read back as the exact value given.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let m = s(bundle());
    for count in ["1", "2"] {
        spn_ok(&[
            "batch",
            "--model",
            m,
            "--count",
            count,
            "--temperature",
            "0.9999999999999999",
            "--out",
            s(&out),
        ]);
    }
    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 2, "{manifest}");
}
