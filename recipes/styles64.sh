#!/usr/bin/env bash
# Trains the next default 64x64 model on every training style: the Google PNG set and the four Iconify vector
# sets rendered at 64 (`make data`: data/styles64/train/{google,noto,fluent-emoji-flat,openmoji,emojione}),
# with left-right flips, 30% of the examples over a random flat colour or gradient (a fifth of those without
# their emoji: issue 15 item 5, upscaling must keep flat colour flat; it needs the data's alpha, which
# `make data` keeps).
#
# The network is the emoji preset with the channel head's copy path (docs/design.md section 3). It starts
# from the weights of the model trained on the PNG set alone (models/default.spn at commit b472580, stop 13:
# 12.2 hours of training) wherever names and shapes match (--warm-start: everything but the copy gates), since
# stage A's small images and most low-bit statistics carry over.
# Usage: recipes/styles64.sh [STEPS]   (after `make data`; resumable: rerun the same command)
#   OUT=out/styles64.spn   WARM=out/default-stop13.spn
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with
# the same weights. A run's checkpoint committed in models/training/ (recipes/checkpoint.sh) is where a fresh
# checkout resumes from.
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
WARM=${WARM:-out/default-stop13.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles64/.done ] || { echo "no data/styles64: run make data first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")" "$(dirname "$WARM")"
recipes/checkpoint.sh restore "$OUT"
common=(--data data/styles64/train --steps "$STEPS" --batch-size 32 --lr 1e-3 --warmup 200 --ema 0.999 --flip
  --backgrounds 0.3 --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v)
run() {
  if [ -f "$OUT.ckpt" ]; then
    "$SPN" train --resume "${common[@]}" "$@"
  else
    [ -f "$WARM" ] || git show b472580:models/default.spn > "$WARM"
    "$SPN" train --preset emoji --warm-start "$WARM" "${common[@]}" "$@"
  fi
}
# Two phases of one run (one schedule to STEPS). Phase 2 trains stages B and C only: stage A was at 0.02 to
# 0.04 bits/dim on every style by then in the run before the copy path (stop 17), while it takes 27% of a
# step (measured: A 220, B 211, C 128 and all three 62 images/s on the two cores).
run --until 3000
run --stages b,c
