// IEEE float32 on CUDA (core/src/precision.rs says why). Plain C symbols, so that no bridge generator is
// needed for two calls.
#include <ATen/Context.h>

extern "C" void spn_cuda_ieee_fp32() {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
}

extern "C" int spn_cuda_tf32_allowed() {
    return at::globalContext().allowTF32CuDNN() || at::globalContext().allowTF32CuBLAS();
}
