#!/usr/bin/env bash
# Cross-builds the runtime and kiln-run for aarch64 (no LLVM/MLIR/protobuf)
# into build-aarch64/bin and build-aarch64/lib. Run them with
#   qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/bin/kiln-run MODEL.so ...
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[build] aarch64 runtime and kiln-run -> build-aarch64/"
if [ ! -f build-aarch64/build.ninja ]; then
  cmake -G Ninja -S . -B build-aarch64 -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DKILN_RUNTIME_ONLY=ON -DKILN_BUILD_TESTS=OFF >/dev/null
fi
ninja -C build-aarch64 -j"${KILN_JOBS:-2}"
