include!("../../core/build_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    link_libtorch();
}
