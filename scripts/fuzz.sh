#!/usr/bin/env bash
# Fuzzes the importer and compile pipeline with libFuzzer for SECONDS
# (default 120), seeded with the lit corpus of good and bad models and small
# ONNX node-test models. The corpus grows in build-asan/fuzz-corpus/ and is
# reused by later runs; crashing inputs land in build-asan/fuzz-crashes/ and
# make the script fail. Long runs: scripts/fuzz.sh 1800 (docs/robustness.md).
#
#   usage: scripts/fuzz.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-120}"
shift || true

if ! bash scripts/build-sanitize.sh > /tmp/kiln-fuzz-build.log 2>&1; then
  tail -30 /tmp/kiln-fuzz-build.log
  echo "[fuzz] sanitizer build failed"
  exit 1
fi
PY=.venv/bin/python
seeds=build-asan/fuzz-seeds corpus=build-asan/fuzz-corpus crashes=build-asan/fuzz-crashes
mkdir -p "$seeds" "$corpus" "$crashes"
$PY test/lit/Inputs/make_onnx.py --all "$seeds"
node_dir="$($PY -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/node"))')"
find "$node_dir" -name model.onnx -size -8k | sort | awk 'NR % 4 == 0' | while read -r f; do
  cp "$f" "$seeds/node_$(basename "$(dirname "$f")").onnx"
done
cp test/fuzz/regressions/* "$seeds/" 2>/dev/null || true

echo "[fuzz] kiln-fuzz for ${SECS}s, $(ls "$seeds" | wc -l) seeds, corpus $(ls "$corpus" | wc -l) inputs"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
set +e
build-asan/bin/kiln-fuzz "$corpus" "$seeds" -max_total_time="$SECS" -max_len=65536 -timeout=30 \
  -rss_limit_mb=6144 -artifact_prefix="$crashes/" -print_final_stats=1 "$@" 2>&1 |
  grep -v '^#[0-9].*\(NEW\|REDUCE\|pulse\)' | tail -40
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$crashes")" ]; then
  echo "[fuzz] FAILED (exit $rc); crashing inputs in $crashes/ - add them to test/fuzz/regressions/"
  exit 1
fi
echo "[fuzz] no crash in ${SECS}s"
