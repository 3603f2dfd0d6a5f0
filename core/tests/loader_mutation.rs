//! Mutation test of the bundle loader (`Pipeline::load`): seeded damage to small valid bundles (truncation,
//! byte flips, edits of the safetensors header's JSON, of the config and metadata inside it, absurd shapes,
//! dtypes and offsets, non-finite weights) must each end, within a time bound, in a loaded model or in one
//! of the errors of a bad file (`Error::Bundle`, `Error::Config`, `Error::BundleVersion`): never a panic,
//! another error, a hang, or unbounded memory.
//!
//! Runs in the normal suite on stable Rust. `SPN_MUTATION_CASES` sets the number of cases (default
//! [`DEFAULT_CASES`]) and `SPN_MUTATION_SEED` the seed (a decimal number); a failure names its case, which
//! reruns alone with `SPN_MUTATION_FIRST=<case> SPN_MUTATION_CASES=1`.
//!
//! A long run, for the record (2-core machine, release build, `/usr/bin/time -v`):
//! `SPN_MUTATION_CASES=50000 SPN_MUTATION_SEED=2718281828` passed in 90 s, slowest case 6.3 ms, maximum
//! resident set 477 MB, the same as a run of one case (libtorch itself): memory does not grow with cases.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use spn::{Error, Pipeline, PipelineConfig};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_CASES: u64 = 5000;
/// A case takes milliseconds; one that takes this long is a failure (and one that never ends fails the
/// test after it, rather than hanging the suite).
const CASE_LIMIT: Duration = Duration::from_secs(10);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A valid bundle of a preset: its header JSON and its data.
fn base(preset: &str, dir: &std::path::Path) -> (Value, Vec<u8>) {
    tch::manual_seed(1);
    let p = dir.join(format!("{preset}.spn"));
    Pipeline::new(PipelineConfig::preset(preset).unwrap(), tch::Device::Cpu)
        .unwrap()
        .save(&p)
        .unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        bytes[8 + n..].to_vec(),
    )
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// Numbers at and around every boundary the loader and the config know.
fn interesting_int(rng: &mut ChaCha8Rng) -> Value {
    const V: &[i64] = &[
        0,
        1,
        2,
        3,
        4,
        5,
        7,
        8,
        9,
        16,
        31,
        32,
        33,
        64,
        65,
        255,
        256,
        257,
        4096,
        4097,
        65535,
        65536,
        99999,
        1_000_000_000,
        (1 << 31) - 1,
        1 << 31,
        i64::MAX,
        -1,
        -2,
        i64::MIN,
    ];
    match rng.gen_range(0..10) {
        0 => json!(u64::MAX),
        1 => json!(1u64 << 63),
        2 => json!(rng.gen_range(-5i64..70)),
        _ => json!(V[rng.gen_range(0..V.len())]),
    }
}

/// Any JSON value at all, weighted to the ones a field might almost accept.
fn junk(rng: &mut ChaCha8Rng) -> Value {
    match rng.gen_range(0..9) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!("x"),
        3 => json!(1.5),
        4 => json!(f64::MAX),
        5 => json!([]),
        6 => json!({}),
        7 => json!([1, 2, 3]),
        _ => interesting_int(rng),
    }
}

const NET_FIELDS: &[&str] = &[
    "channels",
    "embed_blocks",
    "decoder_blocks",
    "attention_every",
    "heads",
    "first_kernel",
    "dropout",
];
const CONFIG_FIELDS: &[&str] = &[
    "name",
    "height",
    "width",
    "scale",
    "msb_bits",
    "small_scale",
    "net",
    "net_a",
    "net_b",
    "net_c",
];

fn pick<'a, T>(rng: &mut ChaCha8Rng, v: &'a [T]) -> &'a T {
    &v[rng.gen_range(0..v.len())]
}

/// One edit of a network's sizes (`net` an object).
fn edit_net(rng: &mut ChaCha8Rng, net: &mut Value, log: &mut Vec<String>) {
    if !net.is_object() {
        return;
    }
    let f = *pick(rng, NET_FIELDS);
    let v = if f == "dropout" {
        pick(
            rng,
            &[
                json!(-0.1),
                json!(1.0),
                json!(0.5),
                json!(1e300),
                json!("nan"),
            ],
        )
        .clone()
    } else if rng.gen_bool(0.8) {
        interesting_int(rng)
    } else {
        junk(rng)
    };
    log.push(format!("net.{f}={v}"));
    net[f] = v;
}

/// One edit of the config inside the bundle's metadata.
fn edit_config(rng: &mut ChaCha8Rng, meta: &mut Value, log: &mut Vec<String>) {
    let Some(text) = meta["config"].as_str() else {
        return;
    };
    let Ok(mut c) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if !c.is_object() {
        return;
    }
    match rng.gen_range(0..10) {
        0 => {
            let f = *pick(rng, CONFIG_FIELDS);
            log.push(format!("config drop {f}"));
            if let Some(o) = c.as_object_mut() {
                o.remove(f);
            }
        }
        1 => {
            log.push("config unknown field".into());
            c["unknown"] = json!(1);
        }
        2 => {
            let f = *pick(rng, &["net_a", "net_b", "net_c"]);
            let mut net = c["net"].clone();
            edit_net(rng, &mut net, log);
            log.push(format!("as {f}"));
            c[f] = net;
        }
        3..=5 => {
            let mut net = c["net"].clone();
            edit_net(rng, &mut net, log);
            c["net"] = net;
        }
        6 => {
            log.push("config junk".into());
            meta["config"] = json!("{\"name\": ");
            return;
        }
        _ => {
            let f = *pick(rng, &CONFIG_FIELDS[1..6]);
            let v = if rng.gen_bool(0.85) {
                interesting_int(rng)
            } else {
                junk(rng)
            };
            log.push(format!("config.{f}={v}"));
            c[f] = v;
        }
    }
    meta["config"] = json!(c.to_string());
}

/// Names of the tensors in a header, sorted.
fn tensor_names(header: &Value) -> Vec<String> {
    let mut v: Vec<String> = header
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// An absurd or almost-right shape.
fn shape(rng: &mut ChaCha8Rng, old: &Value) -> Value {
    match rng.gen_range(0..9) {
        0 => json!([1u64 << 63, 0]),
        1 => json!([u64::MAX, 0]),
        2 => json!([1u64 << 31, 0]),
        3 => json!([]),
        4 => json!([0]),
        5 => json!([1, 1, 1, 1, 1, 1, 1, 1, 1, 0]),
        6 => json!([u64::MAX, u64::MAX]),
        7 => json!([-1]),
        _ => {
            // The old shape with one dimension changed.
            let mut s = old.as_array().cloned().unwrap_or_default();
            if s.is_empty() {
                s.push(json!(1));
            }
            let i = rng.gen_range(0..s.len());
            s[i] = interesting_int(rng);
            Value::Array(s)
        }
    }
}

/// A tensor of a well-formed file: name, dtype, shape, bytes.
type Entry = (String, Value, Value, Vec<u8>);

/// Applies `f` to the tensors of a well-formed file and writes them back with fresh offsets, so the file
/// stays well-formed as safetensors and the edit reaches the checks behind the format's own (an edit of a
/// header that is no longer well-formed is skipped).
fn rebuild(header: &mut Value, data: &mut Vec<u8>, f: impl FnOnce(&mut Vec<Entry>)) {
    let mut entries = vec![];
    for name in tensor_names(header) {
        let t = &header[&name];
        let o = &t["data_offsets"];
        match (o[0].as_u64(), o[1].as_u64()) {
            (Some(a), Some(b)) if a <= b && b as usize <= data.len() => entries.push((
                a,
                (
                    name.clone(),
                    t["dtype"].clone(),
                    t["shape"].clone(),
                    data[a as usize..b as usize].to_vec(),
                ),
            )),
            _ => return,
        }
    }
    entries.sort_by_key(|e| e.0);
    let mut entries: Vec<Entry> = entries.into_iter().map(|e| e.1).collect();
    f(&mut entries);
    let meta = header["__metadata__"].clone();
    *header = json!({ "__metadata__": meta });
    data.clear();
    for (name, dtype, shape, bytes) in entries {
        let start = data.len();
        data.extend(&bytes);
        header[name] = json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]});
    }
}

/// Edits that keep the file well-formed: reshapes, drops and additions with their bytes, swaps, dtypes of
/// the same size.
fn edit_consistently(
    rng: &mut ChaCha8Rng,
    header: &mut Value,
    data: &mut Vec<u8>,
    log: &mut Vec<String>,
) {
    let what = rng.gen_range(0..6);
    let (a, b, n) = (
        rng.gen::<usize>(),
        rng.gen::<usize>(),
        rng.gen_range(0..5usize),
    );
    let extra = if rng.gen_bool(0.5) {
        "__extra"
    } else {
        "a.extra"
    };
    let fill: Vec<u8> = (0..4 * n).map(|_| rng.gen()).collect();
    rebuild(header, data, |es| {
        if es.is_empty() {
            return;
        }
        let (i, j) = (a % es.len(), b % es.len());
        match what {
            0 => {
                // The same elements in another shape.
                let dims: Vec<u64> = es[i]
                    .2
                    .as_array()
                    .map(|d| d.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                let numel: u64 = dims.iter().product();
                let s = match b % 3 {
                    0 => json!([numel]),
                    1 => json!(dims.iter().rev().collect::<Vec<_>>()),
                    _ => json!([1, numel]),
                };
                log.push(format!("reshape {} to {s}", es[i].0));
                es[i].2 = s;
            }
            1 => {
                log.push(format!("drop {} with its bytes", es[i].0));
                es.remove(i);
            }
            2 => {
                log.push(format!("add {extra} of {n} floats"));
                es.push((extra.into(), json!("F32"), json!([n / 2, 2]), fill));
            }
            3 => {
                log.push(format!("swap {} and {}", es[i].0, es[j].0));
                let name = es[i].0.clone();
                es[i].0 = es[j].0.clone();
                es[j].0 = name;
            }
            4 => {
                let d = if b % 2 == 0 { "I32" } else { "U32" };
                log.push(format!("{} as {d}", es[i].0));
                es[i].1 = json!(d);
            }
            _ => {
                log.push(format!("move {} first", es[i].0));
                let e = es.remove(i);
                es.insert(0, e);
            }
        }
    });
}

/// One structured edit of a header (or of the data, for non-finite values).
fn edit(rng: &mut ChaCha8Rng, header: &mut Value, data: &mut Vec<u8>, log: &mut Vec<String>) {
    let names = tensor_names(header);
    let name = if names.is_empty() {
        "none".to_string()
    } else {
        pick(rng, &names).clone()
    };
    // Edits inside a tensor's entry need an object there (an earlier edit may have replaced it).
    if !header[&name].is_object() {
        header[&name] = json!({});
    }
    match rng.gen_range(0..22) {
        0..=2 | 20 | 21 => edit_config(rng, &mut header["__metadata__"], log),
        16..=19 => edit_consistently(rng, header, data, log),
        3 => {
            let v = pick(
                rng,
                &[
                    json!("0"),
                    json!("1"),
                    json!("2"),
                    json!("99"),
                    json!("-1"),
                    json!("4294967296"),
                    json!("x"),
                    json!(1),
                ],
            )
            .clone();
            log.push(format!("format_version={v}"));
            header["__metadata__"]["format_version"] = v;
        }
        4 => {
            let k = *pick(
                rng,
                &[
                    "format",
                    "format_version",
                    "config",
                    "training",
                    "train_state",
                ],
            );
            let v = junk(rng);
            log.push(format!("meta.{k}={v}"));
            header["__metadata__"][k] = if rng.gen_bool(0.5) {
                json!(v.to_string())
            } else {
                v
            };
        }
        5 => {
            let k = *pick(rng, &["format", "config", "format_version", "training"]);
            log.push(format!("meta drop {k}"));
            if let Some(o) = header["__metadata__"].as_object_mut() {
                o.remove(k);
            }
        }
        6 | 7 => {
            let s = shape(rng, &header[&name]["shape"]);
            log.push(format!("{name}.shape={s}"));
            header[&name]["shape"] = s;
        }
        8 => {
            let d = *pick(
                rng,
                &[
                    "F16", "BF16", "F64", "I8", "U8", "BOOL", "I64", "F8_E4M3", "XX", "f32",
                ],
            );
            log.push(format!("{name}.dtype={d}"));
            header[&name]["dtype"] = json!(d);
        }
        9 => {
            let o = header[&name]["data_offsets"].clone();
            let (a, b) = (o[0].as_u64().unwrap_or(0), o[1].as_u64().unwrap_or(0));
            let v = match rng.gen_range(0..6) {
                0 => json!([b, a]),
                1 => json!([a, b + 4]),
                2 => json!([a + 4, b]),
                3 => json!([a, u64::MAX]),
                4 => json!([a]),
                _ => json!([interesting_int(rng), interesting_int(rng)]),
            };
            log.push(format!("{name}.data_offsets={v}"));
            header[&name]["data_offsets"] = v;
        }
        10 => {
            log.push(format!("drop {name}"));
            if let Some(o) = header.as_object_mut() {
                o.remove(&name);
            }
        }
        11 => {
            // A zero-size tensor at the end: well formed, so only its shape can be wrong.
            let end = data.len();
            let s = shape(rng, &json!([0]));
            let n = if rng.gen_bool(0.5) {
                "__extra".to_string()
            } else {
                format!("{name}x")
            };
            log.push(format!("add {n} shape {s}"));
            header[&n] = json!({"dtype": "F32", "shape": s, "data_offsets": [end, end]});
        }
        12 => {
            let v = junk(rng);
            log.push(format!("{name}={v}"));
            header[&name] = v;
        }
        13 | 14 => {
            // A non-finite weight.
            let o = &header[&name]["data_offsets"];
            if let (Some(a), Some(b)) = (o[0].as_u64(), o[1].as_u64()) {
                let (a, b) = (a as usize, (b as usize).min(data.len()));
                if b >= a + 4 {
                    let i = a + 4 * rng.gen_range(0..(b - a) / 4);
                    let x = *pick(rng, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
                    log.push(format!("{name}[{}]={x}", (i - a) / 4));
                    data[i..i + 4].copy_from_slice(&x.to_le_bytes());
                }
            }
        }
        _ => {
            log.push(format!("rename {name}"));
            if let Some(t) = header.as_object_mut().and_then(|o| o.remove(&name)) {
                header[format!("{name}.0")] = t;
            }
        }
    }
}

/// One edit of the bytes themselves.
fn damage(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, log: &mut Vec<String>) {
    let len = bytes.len();
    let header_end = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize + 8)
        .unwrap_or(0)
        .min(len);
    match rng.gen_range(0..6) {
        0 => {
            let n = rng.gen_range(0..len.max(1));
            log.push(format!("truncate to {n}"));
            bytes.truncate(n);
        }
        1 | 2 => {
            let k = rng.gen_range(1..=8);
            for _ in 0..k {
                // Mostly in the header, where a flip changes meaning.
                let end = if rng.gen_bool(0.7) && header_end > 0 {
                    header_end
                } else {
                    len
                };
                if end == 0 {
                    break;
                }
                let i = rng.gen_range(0..end);
                let x = rng.gen_range(1..=255u8);
                bytes[i] ^= x;
            }
            log.push(format!("{k} byte flips"));
        }
        3 => {
            let v = *pick(
                rng,
                &[
                    0,
                    1,
                    7,
                    (header_end as u64).saturating_sub(9),
                    (header_end as u64).saturating_sub(7),
                    len as u64,
                    1 << 40,
                    u64::MAX,
                ],
            );
            log.push(format!("header length {v}"));
            if len >= 8 {
                bytes[..8].copy_from_slice(&v.to_le_bytes());
            }
        }
        4 => {
            let i = rng.gen_range(0..=len);
            let n = rng.gen_range(1..64);
            log.push(format!("insert {n} at {i}"));
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            bytes.splice(i..i, junk);
        }
        _ => {
            let i = rng.gen_range(0..len.max(1));
            let n = rng.gen_range(1..64).min(len - i.min(len));
            log.push(format!("delete {n} at {i}"));
            bytes.drain(i..i + n);
        }
    }
}

/// The bytes and description of case `i`.
fn case(seed: u64, i: u64, bases: &[(Value, Vec<u8>)]) -> (Vec<u8>, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (mut header, mut data) = pick(&mut rng, bases).clone();
    let mut log = vec![];
    // Mostly structured edits, which get past the parser to the checks behind it; some raw damage too.
    let edits = if rng.gen_bool(0.75) {
        rng.gen_range(1..=3)
    } else {
        0
    };
    for _ in 0..edits {
        edit(&mut rng, &mut header, &mut data, &mut log);
    }
    let mut bytes = join(&header, &data);
    let damages = if edits == 0 {
        rng.gen_range(1..=2)
    } else {
        rng.gen_bool(0.15) as u32
    };
    for _ in 0..damages {
        damage(&mut rng, &mut bytes, &mut log);
    }
    (bytes, log.join("; "))
}

#[derive(Debug)]
enum Outcome {
    Loaded,
    Refused(&'static str),
    Wrong(String),
}

#[test]
fn damaged_bundles_load_or_are_refused_never_worse() {
    let cases = env_u64("SPN_MUTATION_CASES", DEFAULT_CASES);
    let seed = env_u64("SPN_MUTATION_SEED", 0x5eed);
    let first = env_u64("SPN_MUTATION_FIRST", 0);
    let dir = tempfile::tempdir().unwrap();
    let bases = vec![base("tiny", dir.path()), base("tiny-full", dir.path())];
    for (h, d) in &bases {
        let p = dir.path().join("check.spn");
        std::fs::write(&p, join(h, d)).unwrap();
        Pipeline::load(&p, tch::Device::Cpu).expect("the unchanged bundle loads");
    }
    // The cases run on a worker thread, so that one that never ends fails the test instead of hanging it.
    let current = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let worker_current = current.clone();
    let path = dir.path().join("case.spn");
    let worker = std::thread::spawn(move || {
        for i in first..first + cases {
            let (bytes, desc) = case(seed, i, &bases);
            *worker_current.lock().unwrap() = format!("case {i}: {desc}");
            std::fs::write(&path, &bytes).unwrap();
            let start = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| Pipeline::load(&path, tch::Device::Cpu)));
            let outcome = match r {
                Ok(Ok(_)) => Outcome::Loaded,
                Ok(Err(Error::Bundle { .. })) => Outcome::Refused("bundle"),
                Ok(Err(Error::Config(_))) => Outcome::Refused("config"),
                Ok(Err(Error::BundleVersion { .. })) => Outcome::Refused("version"),
                Ok(Err(e)) => Outcome::Wrong(format!("wrong error: {e}")),
                Err(p) => Outcome::Wrong(format!(
                    "panic: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            };
            if tx.send((i, desc, outcome, start.elapsed())).is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    let mut failures = vec![];
    let mut slowest = Duration::ZERO;
    for _ in 0..cases {
        let (i, desc, outcome, took) = match rx.recv_timeout(CASE_LIMIT) {
            Ok(r) => r,
            Err(_) => panic!("no result for {CASE_LIMIT:?}: {}", current.lock().unwrap()),
        };
        slowest = slowest.max(took);
        if took > CASE_LIMIT {
            failures.push(format!("case {i} took {took:?}: {desc}"));
        }
        match outcome {
            Outcome::Loaded => *counts.entry("loaded").or_default() += 1,
            Outcome::Refused(k) => *counts.entry(k).or_default() += 1,
            Outcome::Wrong(w) => {
                *counts.entry("wrong").or_default() += 1;
                failures.push(format!("case {i}: {w}\n    after {desc}"));
            }
        }
    }
    worker.join().unwrap();
    eprintln!(
        "{cases} cases (seed {seed:#x}) in {:.1?}, slowest {slowest:.1?}: {counts:?}",
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed (rerun one with SPN_MUTATION_FIRST=<case> SPN_MUTATION_CASES=1):\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // The cases reach every outcome: a generator that only ever made unreadable files would test little.
    if cases >= 1000 {
        for k in ["loaded", "bundle", "version"] {
            assert!(
                counts.get(k).copied().unwrap_or(0) > 0,
                "no case {k}: {counts:?}"
            );
        }
    }
}
