include!("build_libtorch.rs");

/// Builds the c10d shim (src/dist) when Gloo's headers are installed (`make setup` installs them);
/// without them spn builds without distributed training and says so when asked for it.
fn build_dist() {
    println!("cargo:rustc-check-cfg=cfg(spn_dist)");
    println!("cargo:rerun-if-changed=src/dist/shim.cpp");
    println!("cargo:rerun-if-changed=src/dist/shim.h");
    println!("cargo:rerun-if-changed=src/dist/mod.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let gloo = [
        "/usr/include/gloo/allreduce.h",
        "/usr/local/include/gloo/allreduce.h",
    ];
    if !gloo.iter().any(|p| std::path::Path::new(p).exists()) {
        println!("cargo:warning=Gloo headers not found (apt-get install libgloo-dev): building without distributed training");
        return;
    }
    let include = std::path::Path::new(&lib).join("../include");
    cxx_build::bridge("src/dist/mod.rs")
        .file("src/dist/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("USE_C10D_GLOO", "1")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-std=c++17")
        .flag("-w")
        .opt_level(1)
        .compile("spn_dist");
    println!("cargo:rustc-cfg=spn_dist");
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_libtorch.rs");
    link_libtorch();
    build_dist();
}
