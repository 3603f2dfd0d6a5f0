#!/usr/bin/env bash
# The pictures of issue 15 item 6, with the project's own commands (after `make data data-256`): size upscaling
# of held-out emoji of every style next to Lanczos from the same input (`spn bench --upscale --pictures`, the
# very images its PSNR table scores), and samples of both models. Every output is reproducible.
# Usage: recipes/readme-images-styles.sh   MODEL64=... MODEL256=... OUT=docs/styles PARTS='64 256'
set -euo pipefail
cd "$(dirname "$0")/.."
SPN=${SPN:-target/release/spn}
MODEL64=${MODEL64:-models/default.spn}
MODEL256=${MODEL256:-models/emoji256.spn}  # the 256x256 bundle
OUT=${OUT:-docs/styles}
# How the model's column is drawn: the mean of 16 draws at T = 1, the least squared error (models/README.md,
# "Averaged draws"); PICK=--mean for each sub-pixel's mean level.
PICK=${PICK:---average 16}
# The 256 bundle's own 64 to 256 rows: the per-sub-pixel mean, one pass (16 draws of a 256x256 pipeline cost
# minutes an image on two cores, and this bundle is not the one to upscale with: models/README.md).
PICK256=${PICK256:---mean}
# Which pictures to make: 64 (the default model's) and 256 (the 256 bundle's).
PARTS=${PARTS:-64 256}
CONVERT=${CONVERT:-$(command -v /usr/bin/convert || command -v convert)}
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
png() { "$CONVERT" -define png:exclude-chunks=date,time "$@"; }

# One row per style: the input (every FACTOR-th pixel, enlarged by pixel repetition), Lanczos from it, the
# model's upscale (PICK, T = 1), the original; OUT/upscale-NAME.png. With the model's own side, the same for the
# inputs unlike emoji (flat colour, a gradient, line art, a coloured background): OUT/flat-NAME.png.
row() {
  local base=${1%-original.png} side=$2
  png "$base-input.png" -filter point -resize "${side}x${side}" "$base-input-big.png"
  png "$base-input-big.png" "$base-lanczos.png" "$base-model.png" "$base-original.png" +append "$base-row.png"
  echo "$base-row.png"
}
rows() {
  local pick=$1 model=$2 side=$3 factor=$4 name=$5 sets=("${@:6}")
  local dir=$tmp/$name emoji=() flat=()
  "$SPN" bench --model "$model" --upscale "${sets[@]}" --limit 1 $pick --temperatures 1 --factor "$factor" \
    --pictures "$dir" >/dev/null
  for set in "${sets[@]}"; do
    emoji+=("$(row "$dir/$(basename "$set")"-*-t1-original.png "$side")")
  done
  # 64x64 pictures are shown twice their size (pixel repetition), to be seen at all.
  local zoom=$((side < 128 ? 200 : 100))
  png "${emoji[@]}" -append +repage -filter point -resize "$zoom%" "$OUT/upscale-$name.png"
  [ "$name" = "$side" ] || return 0
  for input in flat-green gradient line-art-on-white disc-on-a-coloured-background; do
    flat+=("$(row "$dir/$input-t1-original.png" "$side")")
  done
  png "${flat[@]}" -append +repage -filter point -resize "$zoom%" "$OUT/flat-$name.png"
}
if [[ " $PARTS " == *" 64 "* ]]; then
  rows "$PICK" "$MODEL64" 64 4 64 data/styles64/heldout/{google,noto,fluent-emoji-flat,openmoji,emojione}
  # 64x64 to 256x256 by the 64 bundle, window by window (models/README.md, stop 22).
  rows "$PICK" "$MODEL64" 256 4 256-by-64 data/styles256/heldout/{noto,fluent-emoji-flat,openmoji,emojione}
  "$SPN" generate --model "$MODEL64" --count 16 --seed 1 --grid "$OUT/samples64.png" --out "$tmp/s64" >/dev/null
fi
if [[ " $PARTS " == *" 256 "* ]]; then
  rows "$PICK256" "$MODEL256" 256 4 256 data/styles256/heldout/{noto,fluent-emoji-flat,openmoji,emojione}
  "$SPN" generate --model "$MODEL256" --count 4 --seed 1 --batch-size 4 --grid "$OUT/samples256.png" --out "$tmp/s256" >/dev/null
fi
echo "wrote $OUT/"
