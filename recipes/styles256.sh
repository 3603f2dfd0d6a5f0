#!/usr/bin/env bash
# Trains the 256x256 Multidimensional Upscaling pipeline (preset emoji256-s8: S = 8, 32x32 slices, the 64x64
# preset's network widths; models/README.md "Toward the 256x256 pipeline" says why) on the four Iconify styles
# rendered at 256 (`make data-256`: data/styles256/train/{noto,fluent-emoji-flat,openmoji,emojione}), with
# left-right flips, from scratch.
# Usage: recipes/styles256.sh [STEPS]   (resumable: rerun the same command)
#   OUT=out/styles256.spn
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with the
# same weights.
set -euo pipefail
# Ctrl-C (or the SIGINT of recipes/gpu-train.sh) stops the trainer with a checkpoint and the recipe with it,
# rather than going on to the next phase.
trap 'exit 130' INT
cd "$(dirname "$0")/.."
STEPS=${1:-40000}
OUT=${OUT:-out/styles256.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles256/.done ] || { echo "no data/styles256: run make data-256 first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
common=(--data data/styles256/train --steps "$STEPS" --batch-size 16 --lr 1e-3 --warmup 500 --ema 0.999 --flip
  --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v)
run() {
  if [ -f "$OUT.ckpt" ]; then
    "$SPN" train --resume "${common[@]}" "$@"
  else
    "$SPN" train --preset emoji256-s8 "${common[@]}" "$@"
  fi
}
# Two phases of one run (one schedule to STEPS). Phase 1, steps 0 to 874 (stops 16 and 17): every example on
# white. Phase 2: 30% of the examples over a random flat colour or gradient, a fifth of those without their
# emoji (--backgrounds 0.3, issue 15 item 5); it needs the data's alpha, which `make data-256` keeps.
run --until 874
run --backgrounds 0.3
