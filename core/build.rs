include!("build_libtorch.rs");

/// libtorch's headers, beside the library torch-sys linked (the C++ shims below compile against them).
#[cfg(feature = "torch")]
fn libtorch_include() -> std::path::PathBuf {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("the C++ shims need libtorch's location from torch-sys (DEP_TCH_LIBTORCH_LIB)");
    std::path::Path::new(&lib).join("../include")
}

/// Builds the c10d shim (src/dist) for the `dist` feature (on by default; `make setup` installs Gloo's
/// headers). The symbols come from libtorch itself.
#[cfg(feature = "dist")]
fn build_dist() {
    println!("cargo:rerun-if-changed=src/dist/shim.cpp");
    println!("cargo:rerun-if-changed=src/dist/shim.h");
    println!("cargo:rerun-if-changed=src/dist/mod.rs");
    let gloo = [
        "/usr/include/gloo/allreduce.h",
        "/usr/local/include/gloo/allreduce.h",
    ];
    if !gloo.iter().any(|p| std::path::Path::new(p).exists()) {
        panic!("the dist feature (distributed training) needs Gloo's headers: run `make setup` (apt-get install libgloo-dev), or build with --no-default-features");
    }
    let include = libtorch_include();
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
}

#[cfg(not(feature = "dist"))]
fn build_dist() {}

/// Builds src/precision.cpp (IEEE float32 on CUDA) for the `torch` feature, against torch-sys's libtorch.
#[cfg(feature = "torch")]
fn build_precision() {
    println!("cargo:rerun-if-changed=src/precision.cpp");
    let include = libtorch_include();
    cc::Build::new()
        .cpp(true)
        .file("src/precision.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-std=c++17")
        .flag("-w")
        .opt_level(1)
        .compile("spn_precision");
}

#[cfg(not(feature = "torch"))]
fn build_precision() {}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_libtorch.rs");
    link_libtorch();
    build_precision();
    build_dist();
}
