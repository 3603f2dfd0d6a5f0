#!/usr/bin/env bash
# Makes the README's pictures with the project's own commands and the bundled model (after `make data`).
# Every output is reproducible from the seeds below.
set -euo pipefail
cd "$(dirname "$0")/.."
SPN=target/release/spn
# ImageMagick for the canvas pictures (Debian: imagemagick); /usr/bin first, past stand-ins.
CONVERT=${CONVERT:-$(command -v /usr/bin/convert || command -v convert)}
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

# A large canvas (512x256): 32 held-out emoji tiled 8x4 (ImageMagick's `convert` assembles and posterises it).
tmp=$(mktemp -d)
mapfile -t tiles < <(ls data/emoji/heldout/*.png | awk 'NR % 5 == 2' | head -32)
for r in 0 1 2 3; do
  $CONVERT -define png:exclude-chunks=date,time "${tiles[@]:$((r * 8)):8}" -background white -alpha remove -alpha off +append "$tmp/row$r.png"
done
$CONVERT -define png:exclude-chunks=date,time "$tmp"/row{0,1,2,3}.png -append -alpha off $OUT/canvas.png
# Depth: only the top 3 bits of every value are given; the model draws the low 5.
$CONVERT -define png:exclude-chunks=date,time $OUT/canvas.png -fx "floor(u * 255 / 32) * 32 / 255" -depth 8 $OUT/canvas-3bit.png
$SPN upscale-depth --image $OUT/canvas-3bit.png --seed 6 --out $OUT/canvas-depth.png
# Size: a 128x64 copy becomes slice 0 of 512x256; Lanczos from the same input beside it.
$CONVERT -define png:exclude-chunks=date,time $OUT/canvas.png -filter Lanczos -resize 128x64 $OUT/canvas-small.png
$SPN upscale-size --image $OUT/canvas-small.png --seed 7 --out $OUT/canvas-size.png
$CONVERT -define png:exclude-chunks=date,time $OUT/canvas-small.png -filter Lanczos -resize 512x256 $OUT/canvas-lanczos.png
# Completion of an elliptical hole across several windows.
$CONVERT -define png:exclude-chunks=date,time -size 512x256 xc:white -fill black -draw "ellipse 256,128 100,60 0,360" $OUT/canvas-mask.png
$CONVERT -define png:exclude-chunks=date,time $OUT/canvas.png $OUT/canvas-mask.png -compose multiply -composite $OUT/canvas-hole.png
$SPN complete --image $OUT/canvas.png --mask $OUT/canvas-mask.png --seed 8 --out $OUT/canvas-completed.png
rm -rf "$tmp"
echo "wrote $OUT/"
