include!("../core/build_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../core/build_libtorch.rs");
    link_libtorch();
    // Export exactly the spn_* functions of spn.h: hide the C symbols of static dependencies.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    // The SONAME hosts record: libspn.so.MAJOR (make install adds libspn.so.MAJOR.MINOR.PATCH and the links).
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libspn.so.{major}");
}
