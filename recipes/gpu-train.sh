#!/usr/bin/env bash
# Continues a CPU training run (recipes/styles64.sh or recipes/styles256.sh) on a lent GPU for a time budget
# and brings its checkpoint back, so that the CPU run resumes from there (issue 15 item 8; the device tool:
# ../.library/device/README.md). The run is the recipe itself, resumed from the carried checkpoint: the same
# phases, batch and schedule, with `spn train`'s default device (CUDA where there is one).
#
# 1. Here: stop the recipe's trainer (SIGINT: it writes a checkpoint), then
#      recipes/gpu-train.sh prepare styles64        prints the device tool's carry list (checked under 64 MiB)
# 2. The device tool's `run`, with that carry and a timeout_s about 30 s above SECONDS:
#      bash recipes/gpu-train.sh run styles64 SECONDS
#    There, within SECONDS in all, it renders the data from the carried sources (the Makefile's own rules, `make
#    -o build`), resumes the recipe and stops it with SIGTERM (a checkpoint; SIGINT would be ignored by a
#    command started in the background) in time to write to $OUT the checkpoint in parts under the 16 MiB a
#    returned file may have, its SHA-256, the bundle, the training log and its images/s.
# 3. Here: recipes/gpu-train.sh collect styles64 FILES_AT   (FILES_AT: the folder the tool returned)
#    joins the parts into out/RUN.spn.ckpt (the CPU one kept as out/RUN.spn.ckpt.before-gpu) and puts
#    models/training back, then resume the recipe as usual (and `recipes/checkpoint.sh save` to keep it). The GPU's floating-point sums differ from the CPU's, so the weights are those of an
#    equivalent run, not byte for byte the CPU-only one.
# `DEVICE=cpu bash recipes/gpu-train.sh run RUN SECONDS` (with OUT, and DATA_DONE=1 to keep the data) tries the
# run step here, in a copy of the checkout (it trains the recipe's own out/ checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
run=${2:-}
case "$run" in
  styles64) data_target=data/styles64/.done ;;
  styles256) data_target=data/styles256/.done ;;
  *) echo "usage: $0 prepare|run|collect styles64|styles256 [SECONDS|FILES_AT]" >&2; exit 2 ;;
esac
ckpt=out/$run.spn.ckpt
# Whether this checkout's trainer of RUN is running (another checkout's may be, with the same relative paths).
trainer_running() {
  local pid
  for pid in $(pgrep -f "train .*--out out/$run.spn" || true); do
    [ "$(readlink "/proc/$pid/cwd")" = "$PWD" ] && return 0
  done
  return 1
}
sources=(data/cache/iconify-json-*.tgz)
# Stage 256 names its emoji after the PNG set's files (make's --keys-from) but needs none of their pixels.
names=target/gpu/google-names.txt

case "$mode" in
  prepare)
    # Without a checkpoint the run starts there as the recipe starts it here (from its WARM bundle, tracked).
    [ -f "$ckpt" ] || echo "no $ckpt: the run starts afresh there (recipes/$run.sh)" >&2
    if trainer_running; then
      echo "the $run trainer is running: stop it first (pkill -INT -f 'out/$run.spn'), so the carried checkpoint is its last" >&2
      exit 1
    fi
    # The device tool carries 8 paths at most: the sources and the names travel in one folder, target/gpu.
    mkdir -p target/gpu/cache
    cp "${sources[@]}" target/gpu/cache/
    carry=(target/release/spn target/gpu)
    [ -f "$ckpt" ] && carry+=("$ckpt")
    if [ "$run" = styles64 ]; then
      carry+=(data/cache/package/img/google/64)
    else
      ls data/cache/package/img/google/64 > "$names"
    fi
    # The files kept in models/training (checkpoints, earlier runs' bundles) are tracked, so they travel with
    # the working tree and count towards the same 64 MiB as the carry: all but the recipe's WARM bundle are set
    # aside in out/gpu-kept (not carried) until `collect` puts them back (git has them either way).
    warm=$(sed -n 's/^WARM=\${WARM:-\(.*\)}$/\1/p' "recipes/$run.sh")
    mkdir -p out/gpu-kept
    for f in models/training/*; do
      [ "$f" = "$warm" ] || mv "$f" out/gpu-kept/
    done
    echo "set aside models/training (but $warm) in out/gpu-kept until collect" >&2
    # Files set aside count 0 (du fails on them, hence the || true under pipefail).
    tree=$( (git ls-files -z | xargs -0 du -cb 2>/dev/null || true) | tail -1 | cut -f1)
    bytes=$(( $(du -cb "${carry[@]}" | tail -1 | cut -f1) + tree ))
    echo "carry, with the working tree ($((bytes >> 20)) MiB):" >&2
    printf '%s\n' "${carry[@]}" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().split()))'
    [ "$bytes" -le $((64 << 20)) ] || { echo "over the 64 MiB the device tool carries" >&2; exit 1; }
    ;;
  run)
    seconds=${3:?give the time budget in seconds}
    start=$(date +%s)
    out=${OUT:-/tmp/out}
    mkdir -p "$out"
    if [ "${DEVICE:-cuda}" = cuda ]; then
      # The device machine's own PyTorch (2.11, CUDA 13) supplies libtorch, the version spn was built against.
      torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
      export LD_LIBRARY_PATH=$torch_lib
      nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    fi
    if [ -z "${DATA_DONE:-}" ]; then
      mkdir -p data/cache
      cp -n target/gpu/cache/*.tgz data/cache/ 2>/dev/null || true
      if [ -f "$names" ]; then
        mkdir -p data/cache/package/img/google/64
        (cd data/cache/package/img/google/64 && xargs touch < "$OLDPWD/$names")
      fi
      mkdir -p data/emoji && touch data/emoji/.done
      make -s -o build -o data/emoji/.done "$data_target"
    fi
    # SIGTERM reaches the recipe and its trainer (timeout signals its process group): the trainer writes a
    # checkpoint (seconds) and the recipe stops before its next phase. 60 s are kept for that and for the
    # copies below.
    left=$((seconds - ($(date +%s) - start) - 60))
    [ "$left" -gt 30 ] || { echo "no time left to train after the data ($left s)" >&2; exit 1; }
    status=0
    # The device tool's $OUT is a folder; the recipe's OUT is its bundle.
    OUT=out/$run.spn timeout -s TERM -k 40 "$left" "recipes/$run.sh" >"$out/train.log" 2>&1 || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 124 ] || [ "$status" -eq 143 ] || { tail -20 "$out/train.log"; exit "$status"; }
    grep -E "steps, .* images/s" "$out/train.log" | tee "$out/rate.txt" || true
    split -b 15M "$ckpt" "$out/$run.spn.ckpt.part-"
    (cd out && sha256sum "$run.spn.ckpt") > "$out/$run.spn.ckpt.sha256"
    cp "out/$run.spn" "$out/"
    ;;
  collect)
    from=${3:?give the folder the device tool returned}
    if trainer_running; then
      echo "the $run trainer is running: stop it first" >&2
      exit 1
    fi
    parts=("$from/$run.spn.ckpt.part-"*)
    [ -f "${parts[0]}" ] || { echo "no $run.spn.ckpt.part-* in $from" >&2; exit 1; }
    target/release/spn info --model "$from/$run.spn" >/dev/null
    cat "${parts[@]}" > "$ckpt.gpu"
    # A part that did not come back must not replace the CPU checkpoint.
    [ "$(cut -d' ' -f1 "$from/$run.spn.ckpt.sha256")" = "$(sha256sum "$ckpt.gpu" | cut -d' ' -f1)" ] ||
      { rm -f "$ckpt.gpu"; echo "the joined checkpoint does not match its SHA-256: a part is missing" >&2; exit 1; }
    if compgen -G "out/gpu-kept/*" >/dev/null; then
      mv out/gpu-kept/* models/training/
    fi
    [ -f "$ckpt" ] && mv "$ckpt" "$ckpt.before-gpu"
    mv "$ckpt.gpu" "$ckpt"
    cp "$from/$run.spn" "out/$run.spn"
    cat "$from/rate.txt" 2>/dev/null || true
    echo "out/$run.spn.ckpt is the GPU's; resume with recipes/$run.sh" >&2
    ;;
  *) echo "usage: $0 prepare|run|collect styles64|styles256 [SECONDS|FILES_AT]" >&2; exit 2 ;;
esac
