#!/usr/bin/env bash
# The CUDA checks of issue 18 item 6, for a session lent a GPU (docs: ../.library/device/README.md). Prepared
# here, run there as one command: build on this machine first (`make build` and this script's `build` step),
# then call the device tool's `run` with
#   command: bash recipes/gpu-check.sh run
#   carry:   ["target/release/libspn.so", "target/release/libspn_torch.so", "target/release/spn", "target/gpu"]
# It checks that libspn loads its libtorch backend on CUDA, that the backend's per-sub-pixel bits (its logits
# through log-softmax) match the CPU engine's within 1e-3, and measures 64x64 images a minute at batch 256; then
# `spn bench` on CUDA. Results land in $OUT. Tried here with `bash recipes/gpu-check.sh local` (the backend's
# libtorch on the CPU in place of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  build)
    mkdir -p target/gpu
    cc -std=c11 -O2 -Iinclude tests/gpu/cuda_check.c -o target/gpu/cuda_check \
      -Ltarget/release -lspn -lm -Wl,-rpath,'$ORIGIN/../release'
    ;;
  local)
    target/gpu/cuda_check models/default.spn torch-cpu
    ;;
  run)
    out=${OUT:-/tmp/out}
    mkdir -p "$out"
    # The device machine's own PyTorch (2.11, CUDA 13) supplies libtorch: the backend was linked against the same
    # version here.
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH=$torch_lib SPN_BACKEND=$PWD/target/release/libspn_torch.so
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
    target/gpu/cuda_check models/default.spn cuda 2>&1 | tee "$out/cuda_check.txt"
    target/release/spn --device cuda bench --batch-size 256 --images 256 --json > "$out/bench.json" 2> "$out/bench.log" || true
    ;;
  *)
    echo "usage: recipes/gpu-check.sh build|local|run" >&2
    exit 2
    ;;
esac
