#!/usr/bin/env bash
# Trains the 256x256 Multidimensional Upscaling pipeline (preset emoji256-s8: S = 8, 32x32 slices, the 64x64
# preset's network widths and its copy path; models/README.md "Toward the 256x256 pipeline" says why) on the
# four Iconify styles rendered at 256 (`make data-256`: data/styles256/train/{noto,fluent-emoji-flat,openmoji,
# emojione}), with left-right flips, 30% of the examples over a random flat colour or gradient, a fifth of
# those without their emoji (--backgrounds 0.3, issue 15 item 5; it needs the data's alpha, which
# `make data-256` keeps). It starts from the 64x64 model bundled at commit b472580 (stop 13) wherever the
# weights' names and shapes match (--warm-start: 74% of the parameters; the embedders' inputs, which see S*S
# slices, and the copy gates start fresh): in the run before the copy path, after 400 steps its training
# batches cost 1.31 bits/dim, where the same run from scratch had cost 9.03 after 100 steps, 2.53 after 400
# and 1.65 after 800 (models/README.md).
# Usage: recipes/styles256.sh [STEPS]   (resumable: rerun the same command)
#   OUT=out/styles256.spn   WARM=out/default-stop13.spn
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with the
# same weights. A run's checkpoint committed in models/training/ (recipes/checkpoint.sh) is where a fresh
# checkout resumes from.
set -euo pipefail
# Ctrl-C, or SIGTERM (recipes/gpu-train.sh's timeout), stops the trainer with a checkpoint.
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$(dirname "$0")/.."
STEPS=${1:-12000}
OUT=${OUT:-out/styles256.spn}
WARM=${WARM:-out/default-stop13.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles256/.done ] || { echo "no data/styles256: run make data-256 first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")" "$(dirname "$WARM")"
recipes/checkpoint.sh restore "$OUT"
common=(--data data/styles256/train --steps "$STEPS" --batch-size 16 --lr 1e-3 --warmup 500 --ema 0.999 --flip
  --backgrounds 0.3 --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v)
if [ -f "$OUT.ckpt" ]; then
  "$SPN" train --resume "${common[@]}"
else
  # Pinned to the commit that bundled it, so the recipe means the same after the default model is replaced.
  [ -f "$WARM" ] || git show b472580:models/default.spn > "$WARM"
  "$SPN" train --preset emoji256-s8 --warm-start "$WARM" "${common[@]}"
fi
