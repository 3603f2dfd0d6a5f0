#!/usr/bin/env bash
# Trains the bundled default model (models/default.spn) with the project's own `spn train`.
# Usage: recipes/emoji64.sh [STEPS]   (after `make data`; resumable: rerun the same command)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-4500}
OUT=${OUT:-out/emoji64.spn}
mkdir -p "$(dirname "$OUT")"
resume=()
[ -f "$OUT.ckpt" ] && resume=(--resume)
target/release/spn train --data data/emoji/train --preset emoji --steps "$STEPS" --batch-size 32 \
  --lr 2e-3 --warmup 100 --ema 0.999 --checkpoint-every 50 --seed 0 --eval-images 0 \
  --out "$OUT" "${resume[@]}" -v
