#!/usr/bin/env bash
# Regenerates docs/op-coverage.md from a real run of the ONNX node tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python test/node/run_node_tests.py --build build --doc docs/op-coverage.md "$@"
