//! The SPN network, one module per component.
pub mod decoder;
pub mod embedder;
pub mod head;
pub mod layers;
pub mod spn;
pub mod values;

pub use spn::{nll, SpnNet};
pub use values::Values;
