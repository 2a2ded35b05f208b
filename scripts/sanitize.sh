#!/usr/bin/env bash
# The sanitizer suite: builds build-asan/ (ASan + UBSan, clang-19) and runs
# its tests there. By default the fast ones (Catch2 units, lit, fuzz
# regressions and a 120 s fuzzing run); pass a ctest regex for more, e.g.
#   bash scripts/sanitize.sh .            # everything, node tests included
#   bash scripts/sanitize.sh 'e2e-ops-x86_64|e2e-resnet50-x86_64'
# Leak detection is on; allocator_may_return_null lets out-of-memory tests
# see a null return instead of an abort.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-sanitize.sh
export ASAN_OPTIONS="allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
cd build-asan
ctest --output-on-failure -j"${KILN_JOBS:-2}" -R "${1:-^unit|^lit$|^fuzz-}"
