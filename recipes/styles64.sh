#!/usr/bin/env bash
# Trains the default 64x64 model on every training style (models/default.spn since stop 21: the run ended its
# 20,000 steps in a session whose out/ was lost; one step more from the kept checkpoint, `spn train --resume
# ... --steps 20001`, wrote the bundle): the Google PNG set and the four Iconify vector
# sets rendered at 64 (`make data`: data/styles64/train/{google,noto,fluent-emoji-flat,openmoji,emojione}),
# with left-right flips, 30% of the examples over a random flat colour or gradient (a fifth of those without
# their emoji: issue 15 item 5, upscaling must keep flat colour flat; it needs the data's alpha, which
# `make data` keeps).
#
# The network is the emoji preset with the channel head's copy path, its palette and its line entries
# (docs/design.md section 3). It starts from the weights of the stop-19 run with the palette but without the
# lines (models/training/styles64-stop19.spn, EMA weights at step 6,741 of this recipe at commit 1b5d866), which
# started from the stop-18 run without the palette (EMA weights at step 12,050 of this recipe at commit 53b8ea9,
# kept in git history as models/training/styles64-stop18.spn), itself started from the model trained on the PNG
# set alone (models/default.spn at commit b472580). Each start takes every weight whose name and shape match
# (--warm-start: all of them; the copy gates gained rows for the new entries, which start closed). Stage A at
# 16x16 has one slice, so nothing earlier to copy, no palette and no lines: it is kept as it is and only
# stages B and C train.
# Usage: recipes/styles64.sh [STEPS]   (after `make data`; resumable: rerun the same command)
#   OUT=out/styles64.spn   WARM=models/training/styles64-stop19.spn
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with
# the same weights. A run's checkpoint committed in models/training/ (recipes/checkpoint.sh) is where a fresh
# checkout resumes from.
set -euo pipefail
# Ctrl-C, or SIGTERM (recipes/gpu-train.sh's timeout), stops the trainer with a checkpoint.
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$(dirname "$0")/.."
STEPS=${1:-20000}
OUT=${OUT:-out/styles64.spn}
WARM=${WARM:-models/training/styles64-stop19.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles64/.done ] || { echo "no data/styles64: run make data first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
recipes/checkpoint.sh restore "$OUT"
common=(--data data/styles64/train --steps "$STEPS" --batch-size 32 --lr 1e-3 --warmup 200 --ema 0.999 --flip
  --backgrounds 0.3 --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v)
if [ -f "$OUT.ckpt" ]; then
  "$SPN" train --resume "${common[@]}" --stages b,c
else
  "$SPN" train --preset emoji --warm-start "$WARM" "${common[@]}" --stages b,c
fi
