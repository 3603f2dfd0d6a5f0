//! Data-parallel training on c10d (Gloo over loopback) with the variables torchrun sets.
use spn_tests::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn args(out: &Path, batch: &str, steps: &str) -> Vec<String> {
    let data = fixtures().join("emoji8");
    [
        "train",
        "--data",
        s(&data),
        "--preset",
        "tiny",
        "--steps",
        steps,
        "--batch-size",
        batch,
        "--lr",
        "1e-3",
        "--warmup",
        "1",
        "--seed",
        "5",
        "--eval-images",
        "0",
        "--device",
        "cpu",
        "--checkpoint-every",
        "0",
        "--save-every-rank",
        "--out",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn rank(r: usize, world: usize, port: u16, args: &[String], extra_env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(spn_bin());
    c.args(args)
        .env("RANK", r.to_string())
        .env("LOCAL_RANK", r.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn weights(p: &Path) -> Vec<(String, tch::Tensor)> {
    spn::Pipeline::load(p, tch::Device::Cpu)
        .unwrap()
        .named_weights()
}

fn max_diff(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_match_each_other_and_single_process_training_on_the_combined_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (d, single) = (dir.path().join("d.spn"), dir.path().join("s.spn"));
    let port = free_port();
    let a = args(&d, "4", "8");
    let r1 = rank(1, 2, port, &a, &[]);
    let r0 = rank(0, 2, port, &a, &[]);
    for c in [r0, r1] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rank failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    spn_ok(
        &args(&single, "8", "8")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (w0, w1, ws) = (
        weights(&d),
        weights(&dir.path().join("d.spn.rank1")),
        weights(&single),
    );
    assert_eq!(max_diff(&w0, &w1), 0.0, "the replicas diverged");
    let to_single = max_diff(&w0, &ws);
    assert!(
        to_single < 1e-4,
        "2 ranks x 4 differ from 1 process x 8 by {to_single}"
    );
    // The check can fail: training on the other half of the batch alone gives other weights.
    let half = dir.path().join("h.spn");
    spn_ok(
        &args(&half, "4", "8")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(max_diff(&w0, &weights(&half)) > 1e-3);
}

#[test]
fn a_dead_rank_makes_the_other_fail_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d.spn");
    let port = free_port();
    let a = args(&d, "4", "100000");
    let env = [("SPN_DIST_TIMEOUT_MS", "5000")];
    let mut r1 = rank(1, 2, port, &a, &env);
    let r0 = rank(0, 2, port, &a, &env);
    // Let them start training, then kill rank 1.
    std::thread::sleep(Duration::from_secs(4));
    r1.kill().unwrap();
    r1.wait().unwrap();
    let t = Instant::now();
    let out = r0.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(60), "rank 0 hung");
    assert!(!out.status.success(), "rank 0 should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("distributed") && err.contains("rank 0"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sharded_batch_fills_one_folder_and_manifest_without_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.spn");
    spn_ok(&[
        "train",
        "--data",
        s(&fixtures().join("emoji8")),
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--out",
        s(&model),
        "--eval-images",
        "0",
        "--device",
        "cpu",
    ]);
    let out = dir.path().join("assets");
    let run = |r: usize| {
        Command::new(spn_bin())
            .args([
                "batch",
                "--model",
                s(&model),
                "--count",
                "9",
                "--seed",
                "50",
                "--out",
                s(&out),
                "--batch-size",
                "2",
            ])
            .env("RANK", r.to_string())
            .env("WORLD_SIZE", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (run(0), run(1));
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let mut seeds: Vec<u64> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| json(l)["seed"].as_u64().unwrap())
        .collect();
    seeds.sort();
    assert_eq!(seeds, (50..59).collect::<Vec<_>>(), "{text}");
    for s in 50..59 {
        assert!(out.join(format!("asset-{s}.png")).exists());
    }
    // Resumable: a rerun of either shard has nothing left to do.
    let o = run(1).wait_with_output().unwrap();
    assert!(o.status.success());
}
