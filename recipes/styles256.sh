#!/usr/bin/env bash
# Trains the 256x256 Multidimensional Upscaling pipeline (preset emoji256-s8: S = 8, 32x32 slices, the 64x64
# preset's network widths and its copy path; models/README.md "Toward the 256x256 pipeline" says why) on the
# four Iconify styles rendered at 256 (`make data-256`: data/styles256/train/{noto,fluent-emoji-flat,openmoji,
# emojione}), with left-right flips, 30% of the examples over a random flat colour or gradient, a fifth of
# those without their emoji (--backgrounds 0.3, issue 15 item 5; it needs the data's alpha, which
# `make data-256` keeps). The copy path has its palette, line entries with their spread bins, and blend
# entries (docs/design.md section 3), and (stop 28) slopes on the line and blend entries of stages B and C
# (`line_slopes`, `blend_slopes`, docs/design.md section 3: a two-sided geometric prior around each entry's
# level). Stop 28's second run starts from its first (models/training/styles256-stop28-lines.spn: EMA weights
# at step 780, line slopes only, trained at commit 6ddbd29), with new blend slopes. The first run started from the
# stop-27 run of this recipe (models/training/styles256-stop27.spn: EMA weights at step 1,816 of its 3,000 at
# lr 1.5e-4, trained at commit 269dfcc), whose held-out noto had stopped gaining (0.3700 at stop 23, 0.3695 at
# step 1,358, 0.3693 at step 1,816); the slopes' weights are new (`model::head::LineSlopes::new`), every
# other weight is that run's; lr 3e-4 for the new weights to open within a session. Stop 25's run starts from the stop-23 run of this recipe
# (models/training/styles256-stop23.spn: EMA weights at step 970 of its 6,000 at lr 5e-4, trained at commit
# 7a0c875), whose training batches had been flat since step 500 and whose held-out noto had not gained since
# step 598: the same data at under a third of the rate (1.5e-4), a fresh Adam with 50 warm-up steps, and a
# shorter average (EMA 0.998) that follows a run a session long. The stop-23 run started from the stop-22
# run of this recipe, which had no
# blend entries (models/training/styles256-stop22.spn: EMA weights at step 1,110 of its 6,000, trained at
# commit f651ff2; the blend gates start half open, `model::head::close_palette`), and trains stages B and C
# (stage A, 2% of the bits, keeps its weights). The stop-22 run started from the stop-21 run, which had one
# spread bin (models/training/styles256-stop21.spn: EMA weights at step 8,161 of its 12,000, trained at commit
# e5c22d7), every bin starting with that run's line gates (`train::warm_start`: the density is unchanged at
# the start). The stop-21 run started from the stop-19 run with
# the palette but without the lines (models/training/styles256-stop19.spn, EMA weights at step 1,967 at commit
# 1b5d866), which started from the stop-18 run without the palette (EMA weights at step 3,627 at commit
# 53b8ea9), which started from the 64x64 model bundled at commit b472580 for 73% of its weights. Each start
# takes every weight whose name and shape match (--warm-start).
# Usage: recipes/styles256.sh [STEPS]   (resumable: rerun the same command)
#   OUT=out/styles256.spn   WARM=models/training/styles256-stop28-lines.spn
# Stop 27 ran steps 1 to 1,358 of its run on a lent GPU (recipes/gpu-session.sh) and to 1,816 here.
# Stop 28's second run reached step 914 of 3,000 here (the bundle in models/emoji256.spn); its checkpoint is
# kept in models/training/styles256.spn.ckpt, where the CPU (or recipes/gpu-session.sh) resumes.
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with the
# same weights. A run's checkpoint committed in models/training/ (recipes/checkpoint.sh) is where a fresh
# checkout resumes from.
set -euo pipefail
# Ctrl-C, or SIGTERM (recipes/gpu-train.sh's timeout), stops the trainer with a checkpoint.
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$(dirname "$0")/.."
STEPS=${1:-3000}
OUT=${OUT:-out/styles256.spn}
WARM=${WARM:-models/training/styles256-stop28-lines.spn}
SPN=${SPN:-target/release/spn}
[ -f data/styles256/.done ] || { echo "no data/styles256: run make data-256 first" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
recipes/checkpoint.sh restore "$OUT"
common=(--data data/styles256/train --steps "$STEPS" --batch-size 16 --lr 3e-4 --warmup 50 --ema 0.998 --flip
  --backgrounds 0.3 --checkpoint-every 100 --seed 0 --eval-images 0 --out "$OUT" -v --stages b,c)
if [ -f "$OUT.ckpt" ]; then
  "$SPN" train --resume "${common[@]}"
else
  "$SPN" train --preset emoji256-s8 --warm-start "$WARM" "${common[@]}"
fi
