#!/usr/bin/env bash
# Set-up, build, then compile the bundled example model and run it:
# prints its outputs, the comparison with ONNX Runtime's outputs stored
# beside it, and the latency.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
mkdir -p build/examples
echo "[example] kiln-compile examples/small_cnn/model.onnx -> build/examples/small_cnn.so"
build/bin/kiln-compile examples/small_cnn/model.onnx -o build/examples/small_cnn.so -v
echo "[example] kiln-run"
build/bin/kiln-run build/examples/small_cnn.so \
  --inputs examples/small_cnn/test_data_set_0 --expect examples/small_cnn/test_data_set_0 \
  --bench 50 --threads 2
