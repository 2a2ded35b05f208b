#!/usr/bin/env bash
# Set-up, build, then every test: Catch2 units, lit + FileCheck, and the
# end-to-end checks against ONNX Runtime on x86-64 and aarch64 (qemu).
# ctest prints the summary; the exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure -j"${KILN_JOBS:-2}" "$@"
