#!/usr/bin/env bash
# Checks an installed prefix with the source checkout out of reach: run inside `unshare -m` (the caller hides
# the checkout with an empty tmpfs before calling). Usage: check.sh PREFIX WORK MODE
# Builds a C host with pkg-config and a C++ host with CMake find_package(spn 0.1), runs both on the default
# model, runs the installed `spn generate`, and runs the GIMP plug-in built against the prefix. MODE cpu (a
# `make install` prefix, no libtorch): CUDA must be refused, saying what to install. MODE cuda (after
# `make install-cuda`): the libtorch backend must load from beside libspn and generate.
set -euo pipefail
prefix=$1 work=$2 mode=$3
src=$work/src
mkdir -p "$work/run" && cd "$work/run"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
unset SPN_MODEL LD_LIBRARY_PATH
cc -std=c11 -o host_c "$src/host.c" $(pkg-config --cflags --libs spn)
./host_c c.png
case $mode in
  cpu) ./host_c none.png cuda-missing ;;
  cuda) ./host_c torch.png torch-cpu ;;
esac
cmake -S "$src" -B build -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > cmake.log
cmake --build build > build.log
./build/host_cpp cpp.png
"$prefix/bin/spn" generate --seed 1 --out cli.png
# The GIMP plug-in, built against the prefix, run headless.
plugins=$work/run/profile/plug-ins/spn-gimp
mkdir -p "$plugins"
cc -std=gnu11 -Wno-deprecated-declarations -o "$plugins/spn-gimp" "$src/spn-gimp.c" \
  $(pkg-config --cflags --libs gimpui-2.0 spn)
GIMP2_DIRECTORY=$work/run/profile gimp-console-2.10 -i -d -f -b \
  '(let* ((image (car (plug-in-spn-generate RUN-NONINTERACTIVE "" 1 5 1.0))))
     (file-png-save-defaults RUN-NONINTERACTIVE image (car (gimp-image-get-active-drawable image)) "gimp.png" "gimp.png"))' \
  -b '(gimp-quit 0)' > gimp.log 2>&1
for f in c.png cpp.png cli.png gimp.png; do
  [ -s "$f" ] || { echo "missing $f"; cat gimp.log; exit 1; }
done
echo "install check passed in $prefix"
