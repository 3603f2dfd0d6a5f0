//! A relocatable install, as a CPU host ships it and with the CUDA add-on. `make install-files` into a temporary
//! prefix: libspn and the CLI link no libtorch, and what a CPU host ships (libspn and the default model) stays
//! under 30 MB. Then, with the checkout hidden under an empty tmpfs (`unshare -m`), a C host built with
//! pkg-config, a C++ host built with CMake `find_package(spn 0.1)`, the installed `spn` and the GIMP plug-in
//! built against the prefix all generate with the default model, and CUDA is refused saying what to install
//! (`tests/install/check.sh`). Then `make install-cuda` into the same prefix, the prefix moved elsewhere, and
//! the same again, with the libtorch backend loaded from beside libspn.
use spn_tests::*;
use std::path::Path;
use std::process::Command;

/// Runs the check on `prefix` with the checkout out of reach.
fn check_hidden(prefix: &Path, work: &Path, mode: &str) -> String {
    let script = format!(
        "mount -t tmpfs none '{root}' && test -z \"$(ls -A '{root}')\" && exec bash '{src}/check.sh' '{prefix}' '{work}' {mode}",
        root = root().display(),
        src = work.join("src").display(),
        prefix = prefix.display(),
        work = work.display(),
    );
    // As root a mount namespace is enough; otherwise a user namespace maps us to root inside it.
    let is_root = run_ok(Command::new("id").arg("-u")).trim() == "0";
    let mut cmd = Command::new("unshare");
    cmd.args(if is_root {
        vec!["-m"]
    } else {
        vec!["-r", "-m"]
    })
    .args(["--propagation", "private", "bash", "-c", &script]);
    run_ok(&mut cmd)
}

/// `make TARGET PREFIX=prefix`.
fn make(target: &str, prefix: &Path) {
    run_ok(
        Command::new("make")
            .args(["-s", target])
            .arg(format!("PREFIX={}", prefix.display()))
            .current_dir(root()),
    );
}

/// The dynamic section of `f`.
fn dynamic(f: &Path) -> String {
    run_ok(Command::new("readelf").arg("-d").arg(f))
}

/// `ldd` of `f`: nothing from the checkout, nothing missing.
fn ldd(f: &Path) -> String {
    let out = run_ok(Command::new("ldd").arg(f));
    let checkout = root().display().to_string();
    assert!(
        !out.contains(&checkout),
        "{} loads from the checkout: {out}",
        f.display()
    );
    assert!(!out.contains("not found"), "{}: {out}", f.display());
    out
}

/// Copies what the check builds out of the checkout (before it is hidden) into `work/src`.
fn stage_sources(work: &Path) {
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["host.c", "host.cpp", "CMakeLists.txt", "check.sh"] {
        std::fs::copy(root().join("tests/install").join(f), src.join(f)).unwrap();
    }
    std::fs::copy(
        root().join("plugins/gimp/spn-gimp.c"),
        src.join("spn-gimp.c"),
    )
    .unwrap();
}

#[test]
fn an_installed_prefix_works_without_the_checkout_and_after_moving() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        !dir.path().starts_with(root()),
        "the prefix must lie outside the checkout"
    );
    let prefix = dir.path().join("prefix");
    // The CPU install: no libtorch anywhere.
    make("install-files", &prefix);
    let lib = prefix.join("lib/libspn.so.0");
    let d = dynamic(&lib);
    assert!(d.contains("Library soname: [libspn.so.0]"), "{d}");
    assert!(d.contains("[$ORIGIN]"), "RUNPATH: {d}");
    assert!(prefix
        .join("lib/cmake/spn/spnConfigVersion.cmake")
        .is_file());
    for f in [lib.clone(), prefix.join("bin/spn")] {
        let out = ldd(&f);
        assert!(
            !out.contains("torch"),
            "{} links libtorch: {out}",
            f.display()
        );
    }
    let size = |p: &str| std::fs::metadata(prefix.join(p)).unwrap().len();
    let cpu_host = size("lib/libspn.so.0") + size("share/spn/default.spn");
    println!("a CPU host ships {cpu_host} bytes (libspn and the default model)");
    assert!(cpu_host <= 30 << 20, "{cpu_host} bytes");
    let work = dir.path().join("work-cpu");
    stage_sources(&work);
    let text = check_hidden(&prefix, &work, "cpu");
    assert!(text.contains("install check passed"), "{text}");
    assert!(text.contains("generated 64x64"), "{text}");
    assert!(text.contains("CUDA refused"), "{text}");
    // The CUDA add-on, then the prefix moved.
    make("install-cuda", &prefix);
    let backend = prefix.join("lib/libspn_torch.so");
    let d = dynamic(&backend);
    assert!(d.contains("[$ORIGIN/spn]"), "RUNPATH: {d}");
    assert!(ldd(&backend).contains("libtorch_cpu"));
    assert!(ldd(&prefix.join("bin/spn")).contains("libtorch_cpu"));
    assert!(!ldd(&lib).contains("torch"));
    let moved = dir.path().join("moved/elsewhere");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&prefix, &moved).unwrap();
    let work = dir.path().join("work-cuda");
    stage_sources(&work);
    let text = check_hidden(&moved, &work, "cuda");
    assert!(text.contains("install check passed"), "{text}");
    assert!(text.contains("generated 64x64 (torch-cpu)"), "{text}");
}
