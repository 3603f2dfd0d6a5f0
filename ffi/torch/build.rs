include!("../../core/build_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../core/build_libtorch.rs");
    link_libtorch();
    // Export only spn_backend_v1: hide the C symbols of static dependencies.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
}
