#!/usr/bin/env bash
# A lent GPU's whole use in one device command (../.library/device/README.md: 15 minutes a session in all, a
# minute or more of it to start the machine, so one call does everything): the CUDA checks
# (recipes/gpu-check.sh: the backend's bits against the CPU engine's, images a minute), then a training run
# continued on CUDA for most of the budget (recipes/gpu-train.sh), then its bundle's held-out bits/dim and upscale
# figures on CUDA from the data that run rendered. The device tool brings back 8 files at most, so the small
# results travel in one archive, results.tgz, beside the checkpoint's parts, its SHA-256 and the bundle.
#
# Here:  make build && bash recipes/gpu-check.sh build && recipes/gpu-train.sh prepare RUN
#        (cp out/styles64.spn target/gpu/ for the 64 model's 64->256 upscale figures)
#        carry: target/release/spn target/release/libspn.so target/release/libspn_torch.so target/gpu
#               [out/RUN.spn.ckpt]
# There: bash recipes/gpu-session.sh RUN SECONDS      (timeout_s a little above SECONDS)
# Here:  mkdir -p out/gpu && tar xzf FILES_AT/results.tgz -C out/gpu && cp FILES_AT/RUN.spn* out/gpu/ &&
#        recipes/gpu-train.sh collect RUN out/gpu
set -uo pipefail
cd "$(dirname "$0")/.."
run=${1:?give the run: styles64 or styles256}
seconds=${2:?give the time budget in seconds}
start=$(date +%s)
out=${OUT:-/tmp/out}
work=$(mktemp -d)
mkdir -p "$out"
elapsed() { echo $(($(date +%s) - start)); }
pack() {
  for f in "$work"/*; do
    case "$(basename "$f")" in
      *.ckpt.part-* | *.ckpt.sha256 | "$run.spn") mv "$f" "$out/" ;;
    esac
  done
  tar czf "$out/results.tgz" -C "$work" .
}
trap pack EXIT

# 1. The CUDA checks, each held to a short limit so that training keeps most of the budget.
OUT=$work timeout 150 bash recipes/gpu-check.sh run >"$work/check.log" 2>&1
echo "check: $? after $(elapsed)s" | tee -a "$work/times.txt"

# 2. Training: what is left, less the upscale figures' share.
share=${UPSCALE_SECONDS:-90}
OUT=$work bash recipes/gpu-train.sh run "$run" $((seconds - $(elapsed) - share)) >"$work/gpu-train.log" 2>&1
echo "train: $? after $(elapsed)s" | tee -a "$work/times.txt"

# 3. On CUDA, from the data the training step rendered: the run's bundle scored, then 64->256 upscales.
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib
# The run's bundle, exactly scored on the first 8 held-out images of each style (eval's codecs run on the CPU).
left=$((seconds - $(elapsed) - 15))
if [ -f "out/$run.spn" ] && [ "$left" -gt 60 ]; then
  data=data/$run/heldout
  timeout $((left / 2)) target/release/spn --device cuda eval --model "out/$run.spn" --data "$data" --per-folder \
    --limit 8 --json >"$work/eval.json" 2>"$work/eval.log"
  echo "eval: $? after $(elapsed)s" | tee -a "$work/times.txt"
fi
# 64->256 upscales of held-out emoji by the 64 model (carried as target/gpu/styles64.spn), averaged draws.
left=$((seconds - $(elapsed) - 15))
if [ -f target/gpu/styles64.spn ] && [ -d data/styles256/heldout ] && [ "$left" -gt 20 ]; then
  timeout "$left" target/release/spn --device cuda bench --model target/gpu/styles64.spn \
    --upscale data/styles256/heldout/openmoji --limit 8 --factor 4 --temperatures 1 --average 16 --json \
    >"$work/upscale256-openmoji.json" 2>"$work/upscale.log"
  echo "upscale: $? after $(elapsed)s" | tee -a "$work/times.txt"
fi
