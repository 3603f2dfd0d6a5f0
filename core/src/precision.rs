//! Float32 arithmetic on CUDA: IEEE, as on the CPU.
//!
//! libtorch lets cuDNN's convolutions run in TF32 (10 mantissa bits) by default. On the H200 that moved the
//! CUDA backend's per-sub-pixel bits up to 0.024 away from the CPU engine's (1e-5 of the total); with TF32 off
//! the largest difference was 4.6e-5, inside the 1e-3 that `recipes/gpu-check.sh` holds the backend to
//! (models/README.md, "On a GPU"). Exact evaluation and the engines' agreement are worth more than TF32's speed
//! to these small, launch-bound networks, so every pipeline placed on a CUDA device turns TF32 off.

use std::sync::Once;

extern "C" {
    fn spn_cuda_ieee_fp32();
    fn spn_cuda_tf32_allowed() -> std::os::raw::c_int;
}

/// Turns TF32 off for cuDNN and cuBLAS, once per process (libtorch's flags are global).
pub fn ieee_fp32() {
    static ONCE: Once = Once::new();
    // SAFETY: both calls only set flags of libtorch's global context, which exists once libtorch is loaded
    // (it is linked into this crate with the torch feature); they take no pointers.
    ONCE.call_once(|| unsafe { spn_cuda_ieee_fp32() });
}

/// Whether libtorch would use TF32 for a CUDA convolution or matrix product.
pub fn tf32_allowed() -> bool {
    // SAFETY: reads two flags of libtorch's global context; no pointers.
    unsafe { spn_cuda_tf32_allowed() != 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ieee_fp32_turns_tf32_off() {
        // No CUDA pipeline exists in these tests, so libtorch's default (TF32 for cuDNN) is still in place.
        assert!(super::tf32_allowed());
        super::ieee_fp32();
        assert!(!super::tf32_allowed());
    }
}
