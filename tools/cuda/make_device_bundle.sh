#!/usr/bin/env bash
# Packs binaries of a CUDA build for the GPU machine: stripped copies of the named executables in
# OUT/bin and every shared library they need that is not the C runtime itself (libc, libm, the
# loader, the CUDA libraries) in OUT/lib — the GPU machine has its own CUDA toolkit, driver and glibc
# but none of our Debian packages. Run there from the repository root:
#   LD_LIBRARY_PATH=$PWD/OUT/lib VLMCHECK_TEST_SOURCE_DIR=$PWD VLMCHECK_TEST_BINARY=$PWD/OUT/bin/vlmcheck OUT/bin/<test>
# Usage: tools/cuda/make_device_bundle.sh BUILD_DIR OUT_DIR exe...   (exe relative to BUILD_DIR)
set -euo pipefail
build=$1
out=$2
shift 2
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
for exe in "$@"; do
  strip -o "$out/bin/$(basename "$exe")" "$build/$exe"
  ldd "$build/$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' >> "$out/libs.txt"
done
sort -u "$out/libs.txt" | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*|libcuda.so.*) continue ;;
    libcublas*|libcudart*) continue ;;  # the GPU machine's own CUDA 13 toolkit provides these
  esac
  cp -L "$lib" "$out/lib/"
done
rm "$out/libs.txt"
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
du -sh "$out"
