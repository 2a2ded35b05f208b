#!/usr/bin/env bash
# Set-up (scripts/setup.sh) and build: the compiler and tools for the host in
# build/ (build/bin), the runtime and kiln-run cross-built for aarch64 in
# build-aarch64/ (build-aarch64/bin, build-aarch64/lib). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${KILN_JOBS:-2}"

bash scripts/setup.sh

echo "[build] host (x86-64) compiler, runtime and tools -> build/"
if [ ! -f build/build.ninja ]; then
  cmake -G Ninja -S . -B build -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-19/lib/cmake/mlir >/dev/null
fi
ninja -C build -j"$JOBS"

bash scripts/build-aarch64.sh
