#!/usr/bin/env bash
# Trains the larger pipeline (preset emoji-large: 128 channels, 6 decoder blocks, dropout 0.1) on one GPU within
# a wall-clock budget, then scores it exactly on the held-out images.
# Usage: recipes/gpu.sh [SECONDS]   (after `make data` and a release build; default 420 s in all)
#   OUT=out/large.spn   where the bundle goes; OUT.eval.json gets `spn eval --json`, OUT.log the training log
#   DEVICE=cuda         DEVICE=cpu runs the same steps on the CPU, as a smoke test of this script
#   BATCH=64 LR=1e-3    batch size and peak learning rate
#   SPN=target/release/spn
#
# The CPU-trained default model overfits its 3,597 training images (its stage C sees 0.16 bits/dim less on
# training batches than on held-out images), so the larger net trains with dropout and flips. A short probe run
# measures the device's throughput first, so that the cosine schedule of the real run ends inside the budget; if
# the run is slower than the probe said, it is interrupted (SIGINT saves the bundle) before the budget is out.
# On the lent H200 (carry target/release/spn and data/emoji; it has its own PyTorch 2.11 and no .venv), files
# come back from $OUT only under 16 MiB each, so the 39 MB bundle comes back in parts (`cat` them together):
#   export LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
#   OUT=/tmp/l/large.spn recipes/gpu.sh 420; cp /tmp/l/large.spn.eval.json /tmp/l/large.spn.log $OUT/
#   split -b 15M /tmp/l/large.spn $OUT/large.spn.part-
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-420}
OUT=${OUT:-out/large.spn}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-64}
LR=${LR:-1e-3}
SPN=${SPN:-target/release/spn}
PROBE_STEPS=${PROBE_STEPS:-30}
EVAL_SECONDS=${EVAL_SECONDS:-40}
EVAL_LIMIT=${EVAL_LIMIT:-}   # score only the first N held-out images (smoke tests)
[ -d data/emoji/train ] && [ -d data/emoji/heldout ] || { echo "no data/emoji: run make data first" >&2; exit 1; }
[ -x "$SPN" ] || { echo "no $SPN: build it first (cargo build --release)" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$(dirname "$OUT")"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT

common=(--preset emoji-large --data data/emoji/train --batch-size "$BATCH" --lr "$LR" --warmup 200 --ema 0.999
  --flip --seed 0 --eval-images 0 --device "$DEVICE" --json)
rate=$("$SPN" train "${common[@]}" --steps "$PROBE_STEPS" --checkpoint-every 0 --out "$probe/probe.spn" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["images_per_sec"])')
left=$((BUDGET - ($(date +%s) - start) - EVAL_SECONDS))
# 90% of what the probe's rate says fits: loading the data and writing checkpoints take time too.
steps=$(python3 -c "print(max(1, int(0.9 * $left * $rate / $BATCH)))")
echo "probe: $rate images/s on $DEVICE; training $steps steps in about ${left}s" >&2
timeout -s INT -k 30 "$left" "$SPN" -v train "${common[@]}" --steps "$steps" --checkpoint-every 500 \
  --out "$OUT" --force 2>"$OUT.log" || [ $? -eq 124 ]
"$SPN" eval --model "$OUT" --data data/emoji/heldout --device "$DEVICE" --json ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} \
  >"$OUT.eval.json"
cat "$OUT.eval.json"
echo "done in $(($(date +%s) - start))s: $OUT" >&2
