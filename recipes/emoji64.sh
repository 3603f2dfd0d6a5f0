#!/usr/bin/env bash
# Trains the bundled default model (models/default.spn) with the project's own `spn train`.
# Usage: recipes/emoji64.sh [STEPS] [STEPS_C] [STEPS_F] [STEPS_G] [STEPS_H] [STEPS_I]   (after `make data`;
# resumable: rerun the same command)
#
# Phase 1 trains all three stages for STEPS steps. Phase 2 goes on with stage C alone (the low bits, most of
# the bits/dim) up to STEPS_C steps in all, with a new cosine schedule over the longer run. Phase 3 goes on
# with stages B and C up to STEPS_F steps with left-right flips (--flip): by then stage C's held-out gap was
# growing (flips double the 3,597 training images), and stage B had had only the STEPS steps of phase 1.
# Phase 4 goes on the same way up to STEPS_G steps, with a new cosine schedule over the longer run (both
# stages were still improving at the end of phase 3); phases 5 and 6 likewise up to STEPS_H and STEPS_I.
# Every random choice is seeded by (seed, step), so an interrupted run resumed with the same command ends with
# the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-4500}
STEPS_C=${2:-24000}
STEPS_F=${3:-35000}
STEPS_G=${4:-47000}
STEPS_H=${5:-60000}
STEPS_I=${6:-77000}
OUT=${OUT:-out/emoji64.spn}
mkdir -p "$(dirname "$OUT")"
common=(--data data/emoji/train --batch-size 32 --lr 2e-3 --warmup 100 --ema 0.999 --checkpoint-every 100
  --seed 0 --eval-images 0 --out "$OUT" -v)
step() { [ -f "$OUT" ] && target/release/spn info --model "$OUT" --json | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["training"]["steps"])' 2>/dev/null || echo 0; }
# An interrupted phase (Ctrl-C saves and exits 0) must not run into the next one: rerun to resume it.
reached() { [ "$(step)" -ge "$1" ] || { echo "stopped before step $1: rerun the same command to resume" >&2; exit 1; }; }
if [ "$(step)" -lt "$STEPS" ]; then
  resume=()
  [ -f "$OUT.ckpt" ] && resume=(--resume)
  target/release/spn train --preset emoji --steps "$STEPS" "${common[@]}" "${resume[@]}"
  reached "$STEPS"
fi
if [ "$STEPS_C" -gt "$STEPS" ] && [ "$(step)" -lt "$STEPS_C" ]; then
  target/release/spn train --steps "$STEPS_C" --stages c "${common[@]}" --resume
  reached "$STEPS_C"
fi
# Phases 3 to 6: stages B and C with flips, each phase a new cosine schedule up to its step.
prev=$STEPS_C
for to in "$STEPS_F" "$STEPS_G" "$STEPS_H" "$STEPS_I"; do
  if [ "$to" -gt "$prev" ] && [ "$(step)" -lt "$to" ]; then
    target/release/spn train --steps "$to" --stages b,c --flip "${common[@]}" --resume
    reached "$to"
  fi
  prev=$to
done
