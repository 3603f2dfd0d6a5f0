#!/usr/bin/env bash
# Makes the README's pictures with the project's own commands and the bundled model (after `make data`).
# Every output is reproducible from the seeds below.
set -euo pipefail
cd "$(dirname "$0")/.."
SPN=target/release/spn
OUT=docs
# A held-out emoji (never seen in training): a Christmas tree.
SRC=data/emoji/heldout/${EMOJI:-1f384}.png
[ -f "$SRC" ] || SRC=$(ls data/emoji/heldout/*.png | head -1)
$SPN generate --count 16 --seed 1 --grid $OUT/samples.png
cp "$SRC" $OUT/input.png
$SPN complete --image $OUT/input.png --mask $OUT/mask-top-half.png --seed 3 --out $OUT/completed.png
tmp=$(mktemp -d)
cp "$SRC" "$tmp/"
$SPN data --src "$tmp" --out "$tmp/small" --size 16 --heldout-percent 0 > /dev/null
cp "$tmp"/small/train/*.png $OUT/small16.png
$SPN upscale-size --image $OUT/small16.png --seed 4 --out $OUT/upscaled-size.png
$SPN upscale-depth --image $OUT/input.png --seed 5 --out $OUT/upscaled-depth.png
rm -rf "$tmp"
echo "wrote $OUT/"
