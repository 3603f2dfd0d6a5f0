//! libspn from C and C++: compiled and run here, as a host application would.
use spn_tests::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    spn_bin().parent().unwrap().to_path_buf()
}

fn libspn() -> PathBuf {
    let p = target_dir().join("libspn.so");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace`",
        p.display()
    );
    p
}

fn compile(compiler: &str, std: &str, src: &Path, out: &Path, extra: &[&str]) {
    let inc = root().join("include");
    let lib = target_dir();
    let mut c = Command::new(compiler);
    c.args([std, "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg(format!("-I{}", inc.display()))
        .arg(src)
        .arg("-o")
        .arg(out);
    c.arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()));
    c.args(extra);
    run_ok(&mut c);
}

/// The C hosts that feed libspn bad input run under AddressSanitizer: a read or write of the host's memory
/// out of bounds fails the test. libtorch's own allocations are not instrumented, and what the library keeps
/// until exit is its own business, so leaks are not checked.
const ASAN: &str = "-fsanitize=address";
const ASAN_OPTIONS: &str = "detect_leaks=0:abort_on_error=1";

fn tiny(dir: &Path) -> PathBuf {
    tiny_model(dir, "tiny.spn", 20)
}

#[test]
fn c_host_end_to_end_bad_input_threads_and_compat() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let exe = dir.path().join("abi_test");
    compile(
        "gcc",
        "-std=c11",
        &root().join("tests/c/abi_test.c"),
        &exe,
        &[ASAN, "-fno-omit-frame-pointer", "-lspn", "-lpthread"],
    );
    let out = run_ok(
        Command::new(&exe)
            .arg(&model)
            .current_dir(dir.path())
            .env("ASAN_OPTIONS", ASAN_OPTIONS),
    );
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

/// The libtorch backend, loaded by libspn from beside itself (`target/release/libspn_torch.so`), against the CPU
/// engine built into libspn: the same images, bits and scores (tests/c/backend_test.c).
#[test]
fn the_libtorch_backend_draws_what_the_cpu_engine_draws() {
    libspn();
    assert!(
        target_dir().join("libspn_torch.so").is_file(),
        "libspn_torch.so missing: run `make build`"
    );
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let exe = dir.path().join("backend_test");
    compile(
        "gcc",
        "-std=c11",
        &root().join("tests/c/backend_test.c"),
        &exe,
        &["-lspn", "-lm"],
    );
    let out = run_ok(Command::new(&exe).arg(&model).env_remove("SPN_BACKEND"));
    assert!(out.contains(" passed, 0 failed"), "{out}");
    // A file that is not the backend, named by SPN_BACKEND: refused, saying why; the CPU still works.
    let broken = dir.path().join("libspn_torch.so");
    std::fs::write(&broken, b"not a shared library").unwrap();
    let out = run_ok(
        Command::new(&exe)
            .arg(&model)
            .arg("broken")
            .env("SPN_BACKEND", &broken),
    );
    assert!(out.contains(" passed, 0 failed"), "{out}");
    // The CUDA check a session lent a GPU runs (recipes/gpu-check.sh), here on the backend's CPU.
    let check = dir.path().join("cuda_check");
    compile(
        "gcc",
        "-std=c11",
        &root().join("tests/gpu/cuda_check.c"),
        &check,
        &["-lspn", "-lm"],
    );
    let out = run_ok(Command::new(&check).arg(&model).arg("torch-cpu"));
    assert!(out.contains("torch-cpu: MATCH"), "{out}");
    // libspn itself links no libtorch: only the backend does.
    let ldd = run_ok(Command::new("ldd").arg(libspn()));
    assert!(!ldd.contains("torch"), "{ldd}");
}

#[test]
fn cpp_wrapper_end_to_end() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let exe = dir.path().join("wrapper_test");
    compile(
        "g++",
        "-std=c++17",
        &root().join("tests/cpp/wrapper_test.cpp"),
        &exe,
        &["-lspn", "-lpthread"],
    );
    let out = run_ok(Command::new(&exe).arg(&model));
    assert!(out.contains("0 failed"), "{out}");
}

#[test]
fn cpp_progress_callback_exceptions_reach_the_caller() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let exe = dir.path().join("progress_throw_test");
    // hpp_alone.cpp has spn.hpp as its only include: the header must compile on its own.
    let alone = root().join("tests/cpp/hpp_alone.cpp");
    compile(
        "g++",
        "-std=c++17",
        &root().join("tests/cpp/progress_throw_test.cpp"),
        &exe,
        &[s(&alone), "-lspn", "-lpthread", "-ldl"],
    );
    let out = run_ok(Command::new(&exe).arg(&model));
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn hosts_that_load_libspn_at_run_time() {
    let lib = libspn();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let exe = dir.path().join("host");
    compile(
        "g++",
        "-std=c++17",
        &root().join("examples/cpp_host/host.cpp"),
        &exe,
        &["-ldl"],
    );
    let out = run_ok(
        Command::new(&exe)
            .arg(&lib)
            .arg(&model)
            .arg(dir.path())
            .args(["3", "10"]),
    );
    for seed in 10..13 {
        let png = dir.path().join(format!("asset-{seed}.png"));
        assert_eq!(
            spn::data::load_rgb(&png).unwrap().dimensions(),
            (8, 8),
            "{out}"
        );
    }
    let rust_host = target_dir().join("spn-rust-host");
    let out = run_ok(
        Command::new(&rust_host)
            .arg(&lib)
            .arg(&model)
            .arg(dir.path())
            .arg("2"),
    );
    assert!(dir.path().join("rust-asset-1.png").exists(), "{out}");
}

#[test]
fn headers_compile_alone_in_c_and_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let inc = root().join("include");
    for (compiler, std, file) in [
        ("gcc", "-std=c99", "spn.h"),
        ("gcc", "-std=c11", "spn.h"),
        ("g++", "-std=c++11", "spn.h"),
        ("g++", "-std=c++17", "spn.hpp"),
    ] {
        let lang = if compiler == "gcc" { "c" } else { "c++" };
        let src = dir
            .path()
            .join(format!("only.{}", if lang == "c" { "c" } else { "cpp" }));
        // Included twice: the include guards must hold.
        std::fs::write(
            &src,
            format!("#include \"{file}\"\n#include \"{file}\"\nint main(void) {{ return 0; }}\n"),
        )
        .unwrap();
        run_ok(
            Command::new(compiler)
                .args([
                    std,
                    "-Wall",
                    "-Wextra",
                    "-Wpedantic",
                    "-Werror",
                    "-fsyntax-only",
                ])
                .arg(format!("-I{}", inc.display()))
                .arg(&src),
        );
    }
}

#[test]
fn exported_symbols_are_exactly_the_headers_functions() {
    let out = run_ok(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(libspn()),
    );
    let exported: BTreeSet<String> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] == "T").then(|| f[2].to_string())
        })
        .collect();
    let header = std::fs::read_to_string(root().join("include/spn.h")).unwrap();
    let mut declared = BTreeSet::new();
    for line in header.lines() {
        let t = line.trim_start();
        if t.starts_with("typedef")
            || t.starts_with('*')
            || t.starts_with("/*")
            || t.starts_with('#')
        {
            continue;
        }
        // A declaration is `... spn_name(`: the identifier directly followed by its parameter list.
        for (i, _) in t.match_indices("spn_") {
            let rest = &t[i..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let before_ok =
                i == 0 || !t[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            if before_ok && rest[name.len()..].starts_with('(') {
                declared.insert(name);
            }
        }
    }
    assert!(
        declared.len() >= 20,
        "parsed too few declarations: {declared:?}"
    );
    assert_eq!(exported, declared, "exports and header differ");
}

#[test]
fn install_gives_pkg_config_and_cmake_files_that_work() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("install-files")
            .arg(format!("PREFIX={}", prefix.display()))
            .current_dir(root()),
    );
    for f in [
        "include/spn.h",
        "include/spn.hpp",
        "lib/libspn.so",
        "lib/libspn.so.0",
        "lib/pkgconfig/spn.pc",
        "lib/cmake/spn/spnConfig.cmake",
        "lib/cmake/spn/spnConfigVersion.cmake",
        "share/spn/default.spn",
        "bin/spn",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    let flags = run_ok(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "spn"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
    );
    let src = dir.path().join("v.c");
    std::fs::write(&src, "#include <spn.h>\n#include <stdio.h>\nint main(void) { printf(\"abi %u\\n\", spn_abi_version()); return spn_init(SPN_ABI_VERSION); }\n").unwrap();
    // Compiled and linked against the prefix alone, and run: a CPU install needs no libtorch.
    let exe = dir.path().join("v");
    let mut c = Command::new("gcc");
    c.arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
    run_ok(&mut c);
    let out = run_ok(&mut Command::new(&exe));
    // The version the checkout's header declares.
    let header = std::fs::read_to_string(root().join("include/spn.h")).unwrap();
    let version = header
        .lines()
        .find_map(|l| l.strip_prefix("#define SPN_ABI_VERSION "))
        .expect("spn.h defines SPN_ABI_VERSION")
        .trim();
    assert!(out.contains(&format!("abi {version}")), "{out}");
    assert!(
        flags.contains(&format!(
            "-L{}",
            prefix.join("lib/pkgconfig/../../lib").display()
        )),
        "{flags}"
    );
    // The library links by its SONAME, through the usual links.
    let link = std::fs::read_link(prefix.join("lib/libspn.so")).unwrap();
    assert_eq!(link, Path::new("libspn.so.0"));
}

/// The one mask rule: the same RGBA mask through the CLI and the C ABI gives the same pixels, and the pixels
/// it marks as known (opaque and light) come back unchanged, while an opaque red, a dark or a transparent
/// mask pixel lets the model draw.
#[test]
fn the_cli_and_the_abi_read_an_rgba_mask_by_the_same_rule() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny(d);
    let img = image::open(fixtures().join("emoji8/1f600.png"))
        .unwrap()
        .to_rgba8();
    let (w, h) = img.dimensions();
    let mask = mask_rule_fixture(w, h);
    img.save(d.join("in.png")).unwrap();
    mask.save(d.join("mask.png")).unwrap();
    std::fs::write(d.join("in.rgba"), img.as_raw()).unwrap();
    std::fs::write(d.join("mask.rgba"), mask.as_raw()).unwrap();
    let cli_out = d.join("cli.png");
    spn_ok(&[
        "complete",
        "--model",
        s(&model),
        "--image",
        s(&d.join("in.png")),
        "--mask",
        s(&d.join("mask.png")),
        "--seed",
        "5",
        "--out",
        s(&cli_out),
        "--device",
        "cpu",
    ]);
    let exe = d.join("complete_raw");
    compile(
        "gcc",
        "-std=c11",
        &root().join("tests/c/complete_raw.c"),
        &exe,
        &["-lspn"],
    );
    let abi_out = d.join("abi.png");
    run_ok(Command::new(&exe).args([
        s(&model),
        &w.to_string(),
        &h.to_string(),
        s(&d.join("in.rgba")),
        s(&d.join("mask.rgba")),
        "5",
        s(&abi_out),
    ]));
    let (cli, abi) = (
        image::open(&cli_out).unwrap().to_rgb8(),
        image::open(&abi_out).unwrap().to_rgb8(),
    );
    assert_eq!(
        cli.as_raw(),
        abi.as_raw(),
        "the CLI and the ABI completed differently"
    );
    // The image is opaque, so "unchanged" is its own RGB.
    let input = image::DynamicImage::ImageRgba8(img).to_rgb8();
    let mut drawn_differs = false;
    for y in 0..h / 2 {
        for x in 0..w {
            let (a, b) = (input.get_pixel(x, y), cli.get_pixel(x, y));
            if MASK_KINDS[x as usize % 8].1 {
                assert_eq!(a, b, "known pixel ({x}, {y}) changed");
            } else {
                drawn_differs |= a != b;
            }
        }
    }
    assert!(
        drawn_differs,
        "no pixel the rule leaves unknown was redrawn"
    );
}

/// Hostile input through the C ABI (strides that wrap, struct sizes inside a field, freed handles, seeds
/// that would wrap, a huge batch size), compiled with AddressSanitizer for the host's side.
#[test]
fn hostile_input_through_the_abi_under_address_sanitizer() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let exe = dir.path().join("hostile_test");
    compile(
        "gcc",
        "-std=c11",
        &root().join("tests/c/hostile_test.c"),
        &exe,
        &[ASAN, "-fno-omit-frame-pointer", "-lspn"],
    );
    let out = run_ok(
        Command::new(&exe)
            .arg(&model)
            .env("ASAN_OPTIONS", ASAN_OPTIONS),
    );
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(!out.contains("panicked"), "libspn printed a panic: {out}");
}

/// Bundles that are damaged in the ways that used to crash, hang or reach libtorch (non-finite weights, a
/// dimension of 2^63, configs that would allocate without bound or reach a panicking call) are model errors
/// through the ABI, and nothing is printed to the host's stderr.
#[test]
fn hostile_bundles_are_model_errors_and_print_nothing() {
    libspn();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m.spn", 1);
    let bytes = std::fs::read(&model).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = bytes[8 + n..].to_vec();
    let write = |name: &str, h: &serde_json::Value, d: &[u8]| {
        let h = serde_json::to_vec(h).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(d);
        let p = dir.path().join(name);
        std::fs::write(&p, out).unwrap();
        p
    };
    let mut files = vec![];
    let mut d = data.clone();
    d[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    files.push(write("nan.spn", &header, &d));
    let mut h = header.clone();
    h["x"] = serde_json::json!({"dtype": "F32", "shape": [1u64 << 63, 0], "data_offsets": [data.len(), data.len()]});
    files.push(write("dim.spn", &h, &data));
    for (field, value) in [
        ("decoder_blocks", 1_000_000_000i64),
        ("embed_blocks", 1_000_000_000),
        ("channels", 4096),
        ("channels", 512),
        ("first_kernel", 99999),
    ] {
        let mut c: serde_json::Value =
            serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap();
        c["net"][field] = value.into();
        let mut h = header.clone();
        h["__metadata__"]["config"] = c.to_string().into();
        files.push(write(&format!("{field}-{value}.spn"), &h, &data));
    }
    let src = dir.path().join("hostile.c");
    std::fs::write(
        &src,
        r#"#define _DEFAULT_SOURCE
#include "spn.h"
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    alarm(60);
    spn_model_params mp;
    spn_model_params_init(&mp);
    mp.device = SPN_DEVICE_CPU;
    for (int i = 1; i < argc; i++) {
        spn_model *m = NULL;
        spn_status s = spn_model_load(argv[i], &mp, &m);
        printf("%s %s %s\n", spn_status_string(s), m ? "model" : "none", spn_last_error());
        spn_model_free(m);
    }
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("hostile");
    compile("gcc", "-std=c11", &src, &exe, &[ASAN, "-lspn"]);
    let out = Command::new(&exe)
        .args(&files)
        .env("ASAN_OPTIONS", ASAN_OPTIONS)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), files.len(), "{stdout}");
    for line in stdout.lines() {
        assert!(
            line.starts_with("SPN_ERR_MODEL none bad model bundle"),
            "{line}"
        );
    }
    assert!(stderr.is_empty(), "printed to the host's stderr: {stderr}");
}
