#!/usr/bin/env bash
# Keeps a training run's checkpoint in the repository, so that a run survives a fresh checkout: out/ is not
# committed, and a checkout may start without it.
#   recipes/checkpoint.sh save OUT      copies OUT.ckpt to models/training/ (then commit it)
#   recipes/checkpoint.sh restore OUT   copies it back to OUT.ckpt when OUT.ckpt is missing (the recipes do)
# A checkpoint holds everything a resume needs (weights, EMA weights, optimiser state, step, settings); the
# file name is the bundle's, so one run has one file there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 save|restore OUT" >&2; exit 2; }
kept="models/training/$(basename "$2").ckpt"
case "$1" in
  save)
    [ -f "$2.ckpt" ] || { echo "no checkpoint $2.ckpt" >&2; exit 1; }
    mkdir -p models/training
    cp "$2.ckpt" "$kept.tmp" && mv "$kept.tmp" "$kept"
    echo "kept $kept ($(du -h "$kept" | cut -f1))";;
  restore)
    if [ ! -f "$2.ckpt" ] && [ -f "$kept" ]; then
      mkdir -p "$(dirname "$2")"
      cp "$kept" "$2.ckpt"
      echo "resuming from the kept checkpoint $kept" >&2
    fi;;
  *) echo "usage: $0 save|restore OUT" >&2; exit 2;;
esac
