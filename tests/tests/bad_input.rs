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
