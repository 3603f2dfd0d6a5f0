#!/usr/bin/env bash
# Trains the default 64x64 model on every training style: the Google PNG set and the four Iconify vector sets
# rendered at 64 (`make data`: data/styles64/train/{google,noto,fluent-emoji-flat,openmoji,emojione}), and
# 64x64 windows of the vector sets rendered at 256 (`make data-crops`: data/crops64/train/*, one window an
# emoji; the details a 64x64 model meets when it upscales a 256x256 canvas window by window), with left-right
# flips, 30% of the examples over a random flat colour or gradient (a fifth of those without their emoji:
# issue 15 item 5, upscaling must keep flat colour flat; it needs the data's alpha, which both keep).
#
# The network is the emoji preset with the channel head's copy path: palette, line entries in spread bins, and
# blend entries (docs/design.md section 3), and since stop 29 slopes on the line and blend entries of stages B
# and C (preset emoji-slopes; models/README.md "Why the slopes"). Stop 29's run starts from the stop-27 bundle
# (models/training/styles64-stop27.spn, models/default.spn from stop 27 to stop 28: the EMA weights at step
# 3,000 of stop 23's run, bundled at commit 047fb27), with new slope weights. Stop 23's run started from the bundle of stop 21
# (models/training/styles64-stop21.spn, models/default.spn from stop 21 to stop 26, as at commit f651ff2: the
# EMA weights at step 20,001 of this recipe's previous lineage, whose checkpoint is kept in git history as
# models/training/styles64.spn.ckpt at that commit), every spread bin starting with its line
# gates and the blend gates half open (`train::warm_start`, `model::head::close_palette`), and fine-tunes
# stages B and C at a low rate (stage A at 16x16 has one slice, so nothing earlier to copy: it is kept).
# The previous lineage: the stop-19 run with the palette but without the lines (models/training/styles64-stop19.spn),
# from the stop-18 run without the palette, from the model trained on the PNG set alone (models/default.spn at
# commit b472580).
# Usage: recipes/styles64.sh [STEPS]   (after `make data data-crops`; resumable: rerun the same command)
#   OUT=out/styles64.spn   WARM=models/training/styles64-stop27.spn
# Its EMA weights at step 1,200 are models/default.spn since stop 29 (models/README.md); its checkpoint is
# models/training/styles64.spn.ckpt.
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with
# the same weights. A run's checkpoint committed in models/training/ (recipes/checkpoint.sh) is where a fresh
# checkout resumes from.
set -euo pipefail
# Ctrl-C, or SIGTERM (recipes/gpu-train.sh's timeout), stops the trainer with a checkpoint.
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$(dirname "$0")/.."
STEPS=${1:-1200}
OUT=${OUT:-out/styles64.spn}
WARM=${WARM:-models/training/styles64-stop27.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles64/.done ] || { echo "no data/styles64: run make data first" >&2; exit 1; }
[ -f data/crops64/.done ] || { echo "no data/crops64: run make data-crops first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
recipes/checkpoint.sh restore "$OUT"
common=(--data data/styles64/train --data data/crops64/train --steps "$STEPS" --batch-size 32 --lr 3e-4 --warmup 50 --ema 0.998 --flip
  --backgrounds 0.3 --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v)
if [ -f "$OUT.ckpt" ]; then
  "$SPN" train --resume "${common[@]}" --stages b,c
else
  "$SPN" train --preset emoji-slopes --warm-start "$WARM" "${common[@]}" --stages b,c
fi
