//! Training, resume, exact evaluation and scoring through the `spn` command line.
use spn_tests::*;
use std::time::{Duration, Instant};

#[test]
fn training_drives_bits_per_dim_far_below_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.spn");
    let data = fixtures().join("emoji8");
    let r = json(&spn_ok(&[
        "train",
        "--data",
        s(&data),
        "--preset",
        "tiny",
        "--steps",
        "300",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--warmup",
        "20",
        "--seed",
        "1",
        "--out",
        s(&model),
        "--json",
        "--device",
        "cpu",
    ]));
    let first = r["first_bits_per_dim"].as_f64().unwrap();
    assert!(
        first > 8.0,
        "an untrained model is no better than uniform: {first}"
    );
    let e = json(&spn_ok(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--json",
    ]));
    let bpd = e["bits_per_dim"].as_f64().unwrap();
    // Uniform over 256 levels is 8 bits/dim; the fixtures have lots of white, and a model that learned
    // nothing about them stays near 8.
    assert!(bpd < 4.5, "trained model reaches only {bpd} bits/dim");
    assert_eq!(e["images"].as_u64(), Some(16));
    for k in ["png_bits_per_dim", "webp_bits_per_dim"] {
        assert!(e[k].as_f64().unwrap() > 0.0, "{k}");
    }
    let stages: f64 = e["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bits_per_dim"].as_f64().unwrap())
        .sum();
    assert!((stages - bpd).abs() < 1e-9);

    // The parallel NLL equals the sum of the per-sub-pixel bits that `spn score` reports.
    let img = data.join("1f34e.png");
    let sc = json(&spn_ok(&[
        "score",
        "--model",
        s(&model),
        "--image",
        s(&img),
        "--json",
        "--heatmap",
        s(&dir.path().join("h.png")),
    ]));
    let bits = sc["bits"].as_array().unwrap();
    assert_eq!(bits.len(), 8 * 8 * 3);
    let sum: f64 = bits.iter().map(|b| b.as_f64().unwrap()).sum();
    let single = tempfile::tempdir().unwrap();
    std::fs::copy(&img, single.path().join("x.png")).unwrap();
    let e1 = json(&spn_ok(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(single.path()),
        "--json",
    ]));
    let total = e1["bits_per_dim"].as_f64().unwrap() * (8 * 8 * 3) as f64;
    assert!(
        (sum - total).abs() < 1e-3 * total,
        "score sums to {sum} bits, eval says {total}"
    );
    assert!((sc["total_bits"].as_f64().unwrap() - total).abs() < 1e-3 * total);
    assert!(dir.path().join("h.png").exists());

    let info = json(&spn_ok(&["info", "--model", s(&model), "--json"]));
    assert_eq!(info["training"]["steps"].as_u64(), Some(300));
    assert!(info["parameters"].as_i64().unwrap() > 0);
}

/// The two bundles hold the same weights (within 1e-5), named alike.
fn assert_same_weights(a: &std::path::Path, b: &std::path::Path, when: &str) {
    let pa = spn::Pipeline::load(a, tch::Device::Cpu).unwrap();
    let pb = spn::Pipeline::load(b, tch::Device::Cpu).unwrap();
    for ((na, ta), (nb, tb)) in pa.named_weights().iter().zip(pb.named_weights().iter()) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{na} differs by {diff} {when}");
    }
}

/// `spn eval`'s bits/dim of a model on a folder.
fn eval_bits(model: &std::path::Path, data: &std::path::Path) -> f64 {
    json(&spn_ok(&[
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--json",
    ]))["bits_per_dim"]
        .as_f64()
        .unwrap()
}

fn train_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--preset",
        "tiny",
        "--steps",
        steps,
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--checkpoint-every",
        "10",
        "--eval-images",
        "0",
        "--ema",
        "0.9",
        "--out",
        out,
        "--json",
        "--device",
        "cpu",
    ]
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one() {
    let data = fixtures().join("emoji8");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.spn"), dir.path().join("b.spn"));
    spn_ok(&train_args(s(&data), s(&a), "400"));

    // Start the same run, kill -9 it once a checkpoint exists, and resume it.
    let ckpt = dir.path().join("b.spn.ckpt");
    let mut child = std::process::Command::new(spn_bin())
        .args(train_args(s(&data), s(&b), "400"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        killed,
        "the run finished before it could be killed; make it longer"
    );
    assert!(ckpt.exists());
    // Without --resume an existing run is not silently overwritten.
    let err = spn_err(&train_args(s(&data), s(&b), "400"));
    assert!(err.contains("--resume"), "{err}");

    let mut args = train_args(s(&data), s(&b), "400");
    args.push("--resume");
    let r = json(&spn_ok(&args));
    let from = r["resumed_from"].as_u64().unwrap();
    assert!(
        from > 0 && from < 400 && from.is_multiple_of(10),
        "resumed from step {from}"
    );
    assert_eq!(r["steps"].as_u64(), Some(400));

    assert_same_weights(&a, &b, "after resume");
}

/// A fresh checkout holds a finished run's checkpoint (recipes/checkpoint.sh) but not its bundle, which `out/`
/// kept: rerunning the recipe trains nothing and writes the bundle the run ended with.
#[test]
fn resuming_a_finished_run_without_its_bundle_writes_the_bundle_back() {
    let data = fixtures().join("emoji8");
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.spn");
    spn_ok(&train_args(s(&data), s(&m), "20"));
    let kept = dir.path().join("kept.spn");
    std::fs::rename(&m, &kept).unwrap();
    let mut args = train_args(s(&data), s(&m), "20");
    args.push("--resume");
    let r = json(&spn_ok(&args));
    assert_eq!(r["resumed_from"].as_u64(), Some(20), "{r}");
    assert!(m.exists(), "no bundle written from the finished checkpoint");
    assert_same_weights(&kept, &m, "written back from the checkpoint");
}

#[test]
fn stages_can_be_trained_one_after_another_into_one_bundle() {
    let data = fixtures().join("emoji8");
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.spn");
    let base = |steps: &'static str, stages: &'static str| {
        vec![
            "train",
            "--data",
            s(&data),
            "--preset",
            "tiny",
            "--steps",
            steps,
            "--batch-size",
            "8",
            "--eval-images",
            "0",
            "--stages",
            stages,
            "--out",
            s(&m),
            "--device",
            "cpu",
        ]
    };
    spn_ok(&base("20", "a"));
    let after_a = spn::Pipeline::load(&m, tch::Device::Cpu)
        .unwrap()
        .named_weights();
    let mut args = base("40", "b,c");
    args.push("--resume");
    spn_ok(&args);
    let after_bc = spn::Pipeline::load(&m, tch::Device::Cpu)
        .unwrap()
        .named_weights();
    for ((n, t0), (_, t1)) in after_a.iter().zip(&after_bc) {
        let same = t0.equal(t1);
        assert_eq!(
            same,
            n.starts_with("a."),
            "{n}: stage a must stay as trained, b and c must change"
        );
    }
    let info = json(&spn_ok(&["info", "--model", s(&m), "--json"]));
    assert_eq!(info["training"]["stages"], serde_json::json!(["b", "c"]));
    assert_eq!(info["training"]["steps"].as_u64(), Some(40));
}

/// With EMA on, training only some stages on resume must leave the other stages' bundle weights as they were
/// (their EMA weights, not the raw ones underneath), and a checkpoint moved to another folder must go on
/// being written where it now is.
#[test]
fn resuming_some_stages_keeps_the_others_ema_weights_and_writes_where_the_checkpoint_is() {
    let data = fixtures().join("emoji8");
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.spn");
    let load = |p: &std::path::Path| {
        spn::Pipeline::load(p, tch::Device::Cpu)
            .unwrap()
            .named_weights()
    };
    spn_ok(&train_args(s(&data), s(&first), "20"));
    let before = load(&first);
    // Move the run elsewhere, then train stage c only.
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    let m = moved.join("m.spn");
    std::fs::rename(&first, &m).unwrap();
    std::fs::rename(dir.path().join("first.spn.ckpt"), moved.join("m.spn.ckpt")).unwrap();
    let mut args = train_args(s(&data), s(&m), "30");
    args.extend(["--stages", "c", "--resume"]);
    spn_ok(&args);
    assert!(
        !first.exists() && !dir.path().join("first.spn.ckpt").exists(),
        "the resumed run wrote to the checkpoint's old place"
    );
    let after_c = load(&m);
    for ((n, t0), (_, t1)) in before.iter().zip(&after_c) {
        assert_eq!(
            t0.equal(t1),
            !n.starts_with("c."),
            "{n}: stages a and b must keep their EMA weights, c must change"
        );
    }
    // And back to stage a: c keeps the EMA weights it ended with, b still those of the first run.
    let mut args = train_args(s(&data), s(&m), "40");
    args.extend(["--stages", "a", "--resume"]);
    spn_ok(&args);
    let after_a = load(&m);
    for ((n, t0), ((_, t1), (_, t2))) in before.iter().zip(after_c.iter().zip(&after_a)) {
        assert_eq!(
            t1.equal(t2),
            !n.starts_with("a."),
            "{n} after training stage a"
        );
        if n.starts_with("b.") {
            assert!(t0.equal(t2), "{n} must still be the first run's");
        }
    }
}

/// `--flip` mirrors training examples: a model trained on one lopsided picture learns its mirror image too,
/// and one trained without it does not.
#[test]
fn flip_teaches_the_mirror_image() {
    let dir = tempfile::tempdir().unwrap();
    let (train, orig, mirror) = (
        dir.path().join("train"),
        dir.path().join("orig"),
        dir.path().join("mirror"),
    );
    for d in [&train, &orig, &mirror] {
        std::fs::create_dir(d).unwrap();
    }
    // A red-to-blue ramp on the left half, white on the right.
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        if x < 4 {
            image::Rgb([255 - 40 * x as u8, 30 * y as u8, 60 * x as u8])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    img.save(train.join("x.png")).unwrap();
    img.save(orig.join("x.png")).unwrap();
    image::imageops::flip_horizontal(&img)
        .save(mirror.join("x.png"))
        .unwrap();
    let mut out = vec![];
    for flip in [false, true] {
        let m = dir.path().join(format!("m{flip}.spn"));
        let mut args = train_args(s(&train), s(&m), "150");
        args.extend(["--heldout-percent", "0", "--lr", "3e-3"]);
        if flip {
            args.push("--flip");
        }
        spn_ok(&args);
        out.push((eval_bits(&m, &orig), eval_bits(&m, &mirror)));
    }
    let [(plain_o, plain_m), (flip_o, flip_m)] = [out[0], out[1]];
    eprintln!(
        "no flip: {plain_o:.3} / mirror {plain_m:.3}; flip: {flip_o:.3} / mirror {flip_m:.3}"
    );
    assert!(
        plain_m > 1.5 * plain_o,
        "without --flip the mirror image should stay unlikely: {plain_o} vs {plain_m}"
    );
    assert!(
        // Both near zero (the copy path's lines learn this small picture to about 0.02 bits/dim) is both
        // learned too: a relative difference there is noise.
        flip_m < 0.7 * plain_m && (flip_m - flip_o).abs() < (0.3 * flip_m.max(flip_o)).max(0.05),
        "with --flip both orientations should be learned: {flip_o} / {flip_m} (no flip: {plain_m})"
    );
}

/// The WebP baseline `spn eval` reports is a lossless libwebp file: it decodes to the same pixels, and it is
/// smaller than the `image` crate's own lossless encoder makes it (which would flatter the model).
#[test]
fn the_webp_baseline_is_lossless_libwebp() {
    use image::ImageEncoder;
    let mut ours = 0;
    let mut theirs = 0;
    for e in std::fs::read_dir(fixtures().join("emoji8")).unwrap() {
        let img = spn::data::load_rgb(&e.unwrap().path()).unwrap();
        let bytes = spn::data::webp_lossless(&img).unwrap();
        let back = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP)
            .unwrap()
            .to_rgb8();
        assert_eq!(back, img, "libwebp lossless must give the pixels back");
        let mut w = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut w)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        ours += bytes.len();
        theirs += w.len();
    }
    assert!(ours < theirs, "libwebp {ours} bytes, image crate {theirs}");
}

#[test]
fn resuming_takes_the_settings_given_again_and_refuses_those_that_would_change_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("emoji8");
    let m = dir.path().join("m.spn");
    let (d, o) = (s(&data), s(&m));
    spn_ok(&train_args(d, o, "2"));
    let batch = || {
        let info = json(&spn_ok(&["info", "--model", o, "--json"]));
        (
            info["training"]["steps"].as_u64(),
            info["training"]["batch_size"].as_i64(),
        )
    };
    assert_eq!(batch(), (Some(2), Some(8)));
    let resume = |more: &[&'static str]| -> Vec<String> {
        let mut a: Vec<&str> = vec![
            "train",
            "--data",
            d,
            "--out",
            o,
            "--resume",
            "--eval-images",
            "0",
            "--device",
            "cpu",
        ];
        a.extend_from_slice(more);
        a.into_iter().map(String::from).collect()
    };
    let run_ok = |a: Vec<String>| spn_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let run_err = |a: Vec<String>| spn_err(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // Not given again: as saved.
    run_ok(resume(&["--steps", "3"]));
    assert_eq!(batch(), (Some(3), Some(8)));
    // Given again: replaces the saved value.
    run_ok(resume(&[
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--lr",
        "0.01",
    ]));
    assert_eq!(batch(), (Some(4), Some(4)));
    // What would make it another run is refused, before any step.
    let err = run_err(resume(&["--steps", "5", "--heldout-percent", "20"]));
    assert!(
        err.contains("--heldout-percent 20") && err.contains("5%"),
        "{err}"
    );
    let err = run_err(resume(&["--steps", "5", "--ema", "0.5"]));
    assert!(err.contains("--ema 0.9"), "{err}");
    let err = run_err(resume(&["--steps", "5", "--lr=-1"]));
    assert!(err.contains("--lr"), "{err}");
    assert_eq!(batch(), (Some(4), Some(4)));
}

/// Dropout draws its masks from (seed, step) like every other random choice, so a run stopped and resumed
/// ends with the weights of an uninterrupted one; and the masks do act (a run without dropout ends
/// elsewhere), while the bundle's likelihood stays deterministic.
#[test]
fn dropout_runs_resume_exactly_and_their_likelihood_is_deterministic() {
    use spn::train::{TrainOptions, Trainer};
    use std::sync::atomic::{AtomicBool, Ordering};
    let data = fixtures().join("emoji8");
    let dir = tempfile::tempdir().unwrap();
    let mut config = spn::PipelineConfig::preset("tiny").unwrap();
    config.net.dropout = 0.3;
    let opts = |out: &str| {
        let mut o = TrainOptions::new(data.clone(), dir.path().join(out), 20);
        o.batch_size = 8;
        o.warmup = 2;
        o.checkpoint_every = 5;
        o.eval_images = 0;
        o.ema = Some(0.9);
        o
    };
    let train = |c: Option<spn::PipelineConfig>, o: TrainOptions, resume: bool, stop_at: u64| {
        let stop = AtomicBool::new(false);
        let mut t = Trainer::new(c, o, resume, tch::Device::Cpu, None).unwrap();
        t.run(&stop, |p| {
            if p.step == stop_at {
                stop.store(true, Ordering::Relaxed)
            }
        })
        .unwrap();
        t.step()
    };
    assert_eq!(train(Some(config.clone()), opts("a.spn"), false, 0), 20);
    assert_eq!(train(Some(config.clone()), opts("b.spn"), false, 9), 9);
    assert_eq!(train(None, opts("b.spn"), true, 0), 20);
    let mut plain = config.clone();
    plain.net.dropout = 0.0;
    train(Some(plain), opts("c.spn"), false, 0);

    let load = |n: &str| spn::Pipeline::load(&dir.path().join(n), tch::Device::Cpu).unwrap();
    let (a, b, c) = (load("a.spn"), load("b.spn"), load("c.spn"));
    assert_eq!(a.config().net.dropout, 0.3, "the bundle keeps the dropout");
    let max_diff = |p: &spn::Pipeline, q: &spn::Pipeline| {
        p.named_weights()
            .iter()
            .zip(q.named_weights().iter())
            .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    };
    assert!(max_diff(&a, &b) < 1e-6, "resumed: {}", max_diff(&a, &b));
    assert!(max_diff(&a, &c) > 1e-4, "dropout changed nothing");

    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .take(4)
        .collect();
    let e1 = spn::eval::evaluate(&a, &files, 4).unwrap();
    let e2 = spn::eval::evaluate(&a, &files, 4).unwrap();
    assert_eq!(e1.bits_per_dim, e2.bits_per_dim);
}

/// A few 8x8 pictures on transparency: a coloured square whose place and colour vary.
fn transparent_pictures(dir: &std::path::Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let (x0, y0) = (i % 3, (i / 3) % 3);
        let img = image::RgbaImage::from_fn(8, 8, |x, y| {
            if (x0..x0 + 4).contains(&x) && (y0..y0 + 4).contains(&y) {
                image::Rgba([200, (40 * i) as u8, 30, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        img.save(dir.join(format!("p{i}.png"))).unwrap();
    }
}

/// `--backgrounds` composites examples over random colours: a model trained with it finds a picture on a
/// green background far more likely than one trained on white alone, and still knows them on white.
#[test]
fn backgrounds_teach_coloured_backgrounds() {
    let dir = tempfile::tempdir().unwrap();
    let (train, white, green) = (
        dir.path().join("train"),
        dir.path().join("white"),
        dir.path().join("green"),
    );
    transparent_pictures(&train, 6);
    for (d, bg) in [(&white, [255u8, 255, 255]), (&green, [30, 160, 40])] {
        std::fs::create_dir_all(d).unwrap();
        for i in 0..6 {
            let img = image::open(train.join(format!("p{i}.png")))
                .unwrap()
                .to_rgba8();
            let rgb = image::RgbImage::from_fn(8, 8, |x, y| {
                let p = img.get_pixel(x, y).0;
                image::Rgb(if p[3] == 0 { bg } else { [p[0], p[1], p[2]] })
            });
            rgb.save(d.join(format!("p{i}.png"))).unwrap();
        }
    }
    let mut out = vec![];
    for p in ["0", "0.5"] {
        let m = dir.path().join(format!("m{p}.spn"));
        let mut args = train_args(s(&train), s(&m), "200");
        args.extend(["--heldout-percent", "0", "--lr", "3e-3", "--backgrounds", p]);
        spn_ok(&args);
        out.push((eval_bits(&m, &white), eval_bits(&m, &green)));
    }
    let [(plain_w, plain_g), (bg_w, bg_g)] = [out[0], out[1]];
    eprintln!(
        "white only: {plain_w:.3} / green {plain_g:.3}; backgrounds: {bg_w:.3} / green {bg_g:.3}"
    );
    assert!(
        bg_g < 0.6 * plain_g,
        "with --backgrounds a green background should become likely: {bg_g} (white only: {plain_g})"
    );
    // Half the examples are still on white: the pictures stay well known there (8 bits/dim is knowing
    // nothing; a few tenths is the tiny model's price for also learning every other backdrop).
    assert!(
        bg_w < 1.0,
        "--backgrounds should not unlearn white: {bg_w} bits/dim (white only: {plain_w})"
    );
    // A share outside 0..1 is refused.
    let x = dir.path().join("x.spn");
    let mut args = train_args(s(&train), s(&x), "10");
    args.extend(["--backgrounds", "1.5"]);
    assert!(spn_err(&args).contains("--backgrounds"));
}

/// A run in phases (`--until`, then `--resume` to the end) with backgrounds ends with the weights of the
/// same run made in one go: the backdrops are drawn from each step's seeded generator.
#[test]
fn a_run_in_phases_ends_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    transparent_pictures(&data, 9);
    let (a, b) = (dir.path().join("a.spn"), dir.path().join("b.spn"));
    // 40% held out (of 9 pictures by name hash, some), one scored at the end of the run, not of a phase.
    let with = |out: &std::path::Path, extra: &[&str]| {
        let mut args = train_args(s(&data), s(out), "60");
        args.extend(["--heldout-percent", "40", "--backgrounds", "0.5", "--flip"]);
        let at = args.iter().position(|&a| a == "--eval-images").unwrap();
        args[at + 1] = "1";
        args.extend(extra);
        json(&spn_ok(&args))
    };
    let whole = with(&a, &[]);
    assert!(whole["heldout_bits_per_dim"].as_f64().is_some(), "{whole}");
    let first = with(&b, &["--until", "30"]);
    assert_eq!(first["steps"].as_u64(), Some(30), "{first}");
    assert_eq!(first["interrupted"].as_bool(), Some(false), "{first}");
    assert!(first["heldout_bits_per_dim"].is_null(), "{first}");
    // A phase already passed (a recipe rerun) does nothing.
    let again = with(&b, &["--resume", "--until", "20"]);
    assert_eq!(
        (again["resumed_from"].as_u64(), again["steps"].as_u64()),
        (Some(30), Some(30)),
        "{again}"
    );
    let second = with(&b, &["--resume"]);
    assert_eq!(second["resumed_from"].as_u64(), Some(30), "{second}");
    assert!(
        second["heldout_bits_per_dim"].as_f64().is_some(),
        "{second}"
    );
    assert_same_weights(&a, &b, "after the second phase");
}

/// `spn data --keep-alpha` writes the sources' alpha (what `--backgrounds` needs), and every reader
/// composites it on white to exactly the pixels `spn data` writes without it.
#[test]
fn data_keeps_alpha_and_reads_back_as_the_composited_set() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    transparent_pictures(&src, 4);
    // One of another size: resized, it is composited first, as every reader does (data::fit_rgba).
    let big = image::RgbaImage::from_fn(16, 16, |x, y| {
        image::Rgba([200, 16 * x as u8, 16 * y as u8, (x * 16) as u8])
    });
    big.save(src.join("big.png")).unwrap();
    let set = dir.path().join("icons.json");
    std::fs::write(
        &set,
        r##"{"prefix": "shapes", "width": 16, "height": 16, "icons": {
            "disc": {"body": "<circle cx='8' cy='8' r='5.3' fill='#3a7'/>"},
            "bar": {"body": "<rect x='2.5' y='6' width='11' height='3.2' fill='#c31' opacity='0.6'/>"}}}"##,
    )
    .unwrap();
    let (plain, kept) = (dir.path().join("plain"), dir.path().join("kept"));
    for (out, keep) in [(&plain, false), (&kept, true)] {
        let mut args = vec![
            "data",
            "--src",
            s(&src),
            "--src-style",
            "pics",
            "--iconify",
            s(&set),
        ];
        args.extend(["--size", "8", "--heldout-percent", "0", "--out", s(out)]);
        if keep {
            args.push("--keep-alpha");
        }
        spn_ok(&args);
    }
    let files = spn::data::list_images(&plain).unwrap();
    assert_eq!(files.len(), 7, "{files:?}");
    let mut translucent = 0;
    for f in files {
        let k = kept.join(f.strip_prefix(&plain).unwrap());
        let rgba = image::open(&k).unwrap();
        assert!(rgba.color().has_alpha(), "{} has no alpha", k.display());
        translucent += rgba.to_rgba8().pixels().any(|p| (1..255).contains(&p.0[3])) as usize;
        assert_eq!(
            spn::data::load_rgb(&k).unwrap(),
            image::open(&f).unwrap().to_rgb8(),
            "{}",
            k.display()
        );
    }
    assert!(
        translucent >= 2,
        "the rendered edges should be partly transparent"
    );
}

/// `--warm-start` gives a new run of another size the weights of a trained model wherever names and shapes
/// match: a 16x16, S = 4 config with the tiny preset's widths starts far below a fresh one on the data the
/// 8x8 model learnt, and a model sharing no weight is refused.
#[test]
fn warm_start_carries_weights_to_another_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("emoji8");
    let small = dir.path().join("small.spn");
    let mut args = train_args(s(&data), s(&small), "200");
    args.extend(["--lr", "3e-3"]);
    spn_ok(&args);
    let config = dir.path().join("tiny16.toml");
    std::fs::write(
        &config,
        "name = \"tiny16\"\nheight = 16\nwidth = 16\nscale = 4\nmsb_bits = 3\nsmall_scale = 1\n\
         [net]\nchannels = 16\nembed_blocks = 1\ndecoder_blocks = 2\nattention_every = 2\nheads = 2\n\
         first_kernel = 3\ndropout = 0.0\n",
    )
    .unwrap();
    let first_bits = |out: &str, warm: Option<&std::path::Path>| {
        let out = dir.path().join(out);
        let mut args = vec![
            "train",
            "--config",
            s(&config),
            "--data",
            s(&data),
            "--steps",
            "1",
        ];
        args.extend([
            "--eval-images",
            "0",
            "--json",
            "--device",
            "cpu",
            "--out",
            s(&out),
        ]);
        if let Some(w) = warm {
            args.extend(["--warm-start", s(w)]);
        }
        json(&spn_ok(&args))["first_bits_per_dim"].as_f64().unwrap()
    };
    let (fresh, warm) = (first_bits("f.spn", None), first_bits("w.spn", Some(&small)));
    eprintln!("first batch: fresh {fresh:.3}, warm {warm:.3} bits/dim");
    assert!(warm < 0.75 * fresh, "warm {warm} against fresh {fresh}");
    // Nothing in common: other widths and other depths (every output head differs).
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("channels = 16", "channels = 8")
            .replace("msb_bits = 3", "msb_bits = 4"),
    )
    .unwrap();
    let out = dir.path().join("o.spn");
    let err = spn_err(&[
        "train",
        "--config",
        s(&other),
        "--data",
        s(&data),
        "--steps",
        "1",
        "--warm-start",
        s(&small),
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("no weight"), "{err}");
}

/// `spn eval --per-folder` scores each style folder on its own (with --limit per folder), each row equal to
/// `spn eval` of that folder alone.
#[test]
fn eval_per_folder_reports_each_style() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m.spn", 20);
    let data = dir.path().join("styles");
    let files = spn::data::list_images(&fixtures().join("emoji8")).unwrap();
    for (i, f) in files.iter().take(7).enumerate() {
        let style = data.join(if i < 4 { "one" } else { "two" });
        std::fs::create_dir_all(&style).unwrap();
        std::fs::copy(f, style.join(f.file_name().unwrap())).unwrap();
    }
    let args = |d: &std::path::Path| {
        vec![
            "eval".to_string(),
            "--model".into(),
            s(&model).into(),
            "--data".into(),
            s(d).into(),
            "--json".into(),
        ]
    };
    let mut per = args(&data);
    per.extend(["--per-folder".into(), "--limit".into(), "3".into()]);
    let per: Vec<&str> = per.iter().map(String::as_str).collect();
    let rows = json(&spn_ok(&per));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, (name, n)) in rows.iter().zip([("one", 3), ("two", 3)]) {
        assert_eq!(row["folder"], name);
        assert_eq!(row["images"].as_u64(), Some(n));
        let mut alone = args(&data.join(name));
        alone.extend(["--limit".into(), "3".into()]);
        let alone: Vec<&str> = alone.iter().map(String::as_str).collect();
        let alone = json(&spn_ok(&alone));
        for key in ["bits_per_dim", "webp_bits_per_dim", "png_bits_per_dim"] {
            assert_eq!(row[key], alone[key], "{name} {key}");
        }
    }
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let err = spn_err(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&flat),
        "--per-folder",
    ]);
    assert!(err.contains("no sub-folders"), "{err}");
}

/// The channel head's copy path (`decode::neighbours`): stage C trained on nothing but flat colours learns to
/// continue them, paying almost nothing (only the first pixel's low bits are unknown; 0.12 bits/dim after
/// these few steps, 1.25 had it copied from other slices only), while the same network without it stays near
/// the 5 bits of knowing nothing (models/README.md: "stage C does not copy").
#[test]
fn the_copy_path_continues_flat_colour() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    std::fs::create_dir_all(&train).unwrap();
    for i in 0..16 {
        image::RgbaImage::new(8, 8)
            .save(train.join(format!("t{i}.png")))
            .unwrap();
    }
    let flat = dir.path().join("flat.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([46, 139, 87]))
        .save(&flat)
        .unwrap();
    let mut no_copy = spn::PipelineConfig::preset("tiny").unwrap();
    no_copy.net.copy = false;
    let no_copy_path = dir.path().join("no-copy.json");
    std::fs::write(&no_copy_path, serde_json::to_string(&no_copy).unwrap()).unwrap();
    let stage_c_bits = |model: &std::path::Path, net: [&str; 2]| {
        spn_ok(&[
            "train",
            "--data",
            s(&train),
            net[0],
            net[1],
            "--stages",
            "c",
            "--backgrounds",
            "1",
            "--steps",
            "300",
            "--batch-size",
            "16",
            "--lr",
            "1e-2",
            "--warmup",
            "20",
            "--seed",
            "0",
            "--heldout-percent",
            "0",
            "--eval-images",
            "0",
            "--out",
            s(model),
            "--device",
            "cpu",
        ]);
        let score = json(&spn_ok(&[
            "score",
            "--model",
            s(model),
            "--image",
            s(&flat),
            "--json",
        ]));
        score["stages"][2]["bits_per_dim"].as_f64().unwrap()
    };
    let with = stage_c_bits(&dir.path().join("copy.spn"), ["--preset", "tiny"]);
    let without = stage_c_bits(
        &dir.path().join("no-copy.spn"),
        ["--config", s(&no_copy_path)],
    );
    eprintln!(
        "stage C on a flat colour: {with:.3} bits/dim with the copy path, {without:.3} without"
    );
    assert!(
        with < 0.5,
        "the copy path should continue flat colour: {with} bits/dim"
    );
    assert!(
        without > 10.0 * with,
        "without the copy path: {without} bits/dim"
    );
}

/// `spn data --crop` writes a window of each render, under the same names (so the split by emoji holds), and
/// `spn train` reads several `--data` folders as one set.
#[test]
fn crops_are_windows_of_the_renders_and_training_reads_several_folders() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    transparent_pictures(&src, 4);
    let set = dir.path().join("icons.json");
    std::fs::write(
        &set,
        r##"{"prefix": "shapes", "width": 16, "height": 16, "icons": {
            "disc": {"body": "<circle cx='8' cy='8' r='5.3' fill='#3a7'/>"},
            "bar": {"body": "<rect x='2.5' y='6' width='11' height='3.2' fill='#c31'/>"}}}"##,
    )
    .unwrap();
    let (whole, crops) = (dir.path().join("whole"), dir.path().join("crops"));
    for (out, crop) in [(&whole, None), (&crops, Some("8"))] {
        let mut args = vec!["data", "--iconify", s(&set), "--size", "16"];
        args.extend(["--heldout-percent", "0", "--keep-alpha", "--out", s(out)]);
        args.extend(crop.map(|c| ["--crop", c]).into_iter().flatten());
        spn_ok(&args);
    }
    let files = spn::data::list_images(&crops).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let window = image::open(f).unwrap().to_rgba8();
        assert_eq!(window.dimensions(), (8, 8));
        // A window of the render: found in it, and at least a quarter of it the shape.
        let full = image::open(whole.join(f.strip_prefix(&crops).unwrap()))
            .unwrap()
            .to_rgba8();
        let found = (0..=8).any(|y| {
            (0..=8).any(|x| image::imageops::crop_imm(&full, x, y, 8, 8).to_image() == window)
        });
        assert!(found, "{} is not a window of its render", f.display());
        assert!(4 * window.pixels().filter(|p| p.0[3] > 0).count() >= 64);
    }
    let err = spn_err(&[
        "data",
        "--iconify",
        s(&set),
        "--size",
        "16",
        "--crop",
        "17",
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert!(err.contains("--crop 17"), "{err}");

    let out = dir.path().join("m.spn");
    let mut args = train_args(s(&src), s(&out), "2");
    args.extend(["--data", s(&crops), "--heldout-percent", "0"]);
    spn_ok(&args);
    let info = json(&spn_ok(&["info", "--model", s(&out), "--json"]));
    let training = &info["training"];
    assert_eq!(training["train_images"].as_u64(), Some(4 + 2), "{training}");
    let data = training["data"].as_str().unwrap();
    assert!(data.contains(s(&src)) && data.contains(s(&crops)), "{data}");
}
