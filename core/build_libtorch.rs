// Shared by the build scripts of every crate that links libtorch (core, ffi, tests):
// binaries, tests and shared libraries start without `LD_LIBRARY_PATH`, and `libtorch_cuda` stays linked
// so that CUDA is found where a GPU exists (the linker drops it as unused otherwise).
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so");
    if cuda.exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed", cuda.display());
    }
}
