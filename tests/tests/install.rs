//! A relocatable install: `make install-cuda` into a temporary prefix, then, with the checkout hidden under an
//! empty tmpfs (`unshare -m`), a C host built with pkg-config, a C++ host built with CMake
//! `find_package(spn 0.1)`, the installed `spn` and the GIMP plug-in built against the prefix all generate with
//! the default model (`tests/install/check.sh`); then the same after moving the prefix elsewhere.
use spn_tests::*;
use std::path::Path;
use std::process::Command;

/// Runs the check on `prefix` with the checkout out of reach.
fn check_hidden(prefix: &Path, work: &Path) -> String {
    let script = format!(
        "mount -t tmpfs none '{root}' && test -z \"$(ls -A '{root}')\" && exec bash '{src}/check.sh' '{prefix}' '{work}'",
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

#[test]
fn an_installed_prefix_works_without_the_checkout_and_after_moving() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        !dir.path().starts_with(root()),
        "the prefix must lie outside the checkout"
    );
    let prefix = dir.path().join("prefix");
    run_ok(
        Command::new("make")
            .args(["-s", "install-cuda"])
            .arg(format!("PREFIX={}", prefix.display()))
            .current_dir(root()),
    );
    let lib = prefix.join("lib/libspn.so.0");
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&lib));
    assert!(
        dynamic.contains("Library soname: [libspn.so.0]"),
        "{dynamic}"
    );
    assert!(
        dynamic.contains("[$ORIGIN:$ORIGIN/spn]"),
        "RUNPATH: {dynamic}"
    );
    assert!(prefix
        .join("lib/cmake/spn/spnConfigVersion.cmake")
        .is_file());
    let checkout = root().display().to_string();
    for f in [lib.clone(), prefix.join("bin/spn")] {
        let ldd = run_ok(Command::new("ldd").arg(&f));
        assert!(
            !ldd.contains(&checkout),
            "{} loads from the checkout: {ldd}",
            f.display()
        );
        assert!(!ldd.contains("not found"), "{}: {ldd}", f.display());
    }
    // What the check builds, copied out of the checkout before it is hidden.
    for (i, p) in [prefix.clone(), dir.path().join("moved/elsewhere")]
        .iter()
        .enumerate()
    {
        if i == 1 {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::rename(&prefix, p).unwrap();
        }
        let work = dir.path().join(format!("work{i}"));
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
        let text = check_hidden(p, &work);
        assert!(text.contains("install check passed"), "{text}");
        assert!(text.contains("generated 64x64"), "{text}");
    }
}
