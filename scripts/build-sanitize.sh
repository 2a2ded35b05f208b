#!/usr/bin/env bash
# Builds the sanitizer configuration in build-asan/: kiln's compiler, runtime,
# tools and tests compiled by clang-19 with AddressSanitizer and
# UndefinedBehaviorSanitizer, plus the libFuzzer target bin/kiln-fuzz.
# LLVM, MLIR and protobuf are Debian's (uninstrumented). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${KILN_JOBS:-2}"

bash scripts/setup.sh
echo "[build] sanitizer build (clang-19, ASan+UBSan, libFuzzer) -> build-asan/"
if [ ! -f build-asan/build.ninja ]; then
  CC=clang-19 CXX=clang++-19 cmake -G Ninja -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKILN_SANITIZE=address,undefined -DKILN_FUZZ=ON \
    -DMLIR_DIR=/usr/lib/llvm-19/lib/cmake/mlir >/dev/null
fi
ninja -C build-asan -j"$JOBS"
