// Same run path and CUDA linking as the core crate.
include!("../core/build.rs");
