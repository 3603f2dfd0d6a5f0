#!/usr/bin/env bash
# Trains the next default 64x64 model on every training style: the Google PNG set and the four Iconify vector
# sets rendered at 64 (`make data`: data/styles64/train/{google,noto,fluent-emoji-flat,openmoji,emojione}),
# with left-right flips. It starts from the weights of the model trained on the PNG set alone
# (models/default.spn at commit b472580, stop 13: 12.2 hours of training), since stage A's small images and most low-bit
# statistics carry over, and the broader data is what cures its overfitting (models/README.md).
# Usage: recipes/styles64.sh [STEPS]   (after `make data`; resumable: rerun the same command)
#   OUT=out/styles64.spn   INIT=models/default.spn
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with
# the same weights.
set -euo pipefail
# Ctrl-C, or SIGTERM (recipes/gpu-train.sh's timeout), stops the trainer with a checkpoint and the recipe with
# it, rather than going on to the next phase.
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$(dirname "$0")/.."
STEPS=${1:-30000}
OUT=${OUT:-out/styles64.spn}
# The starting point is pinned to the commit that bundled it, so the recipe means the same after the default
# model is replaced.
INIT=${INIT:-out/default-stop13.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles64/.done ] || { echo "no data/styles64: run make data first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")" "$(dirname "$INIT")"
common=(--data data/styles64/train --steps "$STEPS" --batch-size 32 --lr 1e-3 --warmup 200 --ema 0.999 --flip
  --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v)
run() {
  if [ -f "$OUT.ckpt" ]; then
    "$SPN" train --resume "${common[@]}" "$@"
  else
    [ -f "$INIT" ] || git show b472580:models/default.spn > "$INIT"
    "$SPN" train --init "$INIT" "${common[@]}" "$@"
  fi
}
# Three phases of one run (one schedule to STEPS). Phase 1, steps 0 to 13,251 (stops 14 to 17): every example
# on white. From phase 2 on, 30% of the examples go over a random flat colour or gradient, a fifth of those
# without their emoji (--backgrounds 0.3, issue 15 item 5: upscaling must keep flat colour flat); it needs the
# data's alpha, which `make data` keeps (--keep-alpha). Phase 3 trains stages B and C only: stage A was at
# 0.02 to 0.04 bits/dim on every style, while it took 27% of a step (measured: A 220, B 211, C 128 and all
# three 62 images/s on the two cores), so B and C get 1.3 times the updates in the same time.
run --until 13251
run --until 13500 --backgrounds 0.3
run --backgrounds 0.3 --stages b,c
