#!/usr/bin/env bash
# Installs everything kiln needs on Debian 12, idempotently:
# apt packages (LLVM/MLIR 19, ONNX, protobuf, fmt, Catch2, cross toolchain,
# qemu, OpenCL headers, ICD loader and PoCL's CPU driver, torch for
# exporting test models) and a Python venv (.venv) with
# onnx, onnxruntime and numpy used by tests and benchmarks only.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(
  cmake ninja-build g++ pkg-config
  llvm-19-dev libmlir-19-dev mlir-19-tools llvm-19-tools clang-19 libclang-rt-19-dev libzstd-dev
  libprotobuf-dev protobuf-compiler libonnx-dev libfmt-dev catch2
  g++-aarch64-linux-gnu qemu-user graphviz
  opencl-c-headers ocl-icd-libopencl1 pocl-opencl-icd
  python3 python3-venv python3-numpy python3-pil python3-torch python3-torchvision
)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[setup] apt packages present"
fi

# Python venv for the numerical oracle (ONNX Runtime) and test-model tools.
# --system-site-packages lets it see Debian's torch/torchvision for exports.
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c "import onnx, onnxruntime, numpy" 2>/dev/null; then
  echo "[setup] installing onnx, onnxruntime, numpy into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "numpy<2" "onnx==1.16.2" "onnxruntime==1.19.2"
else
  echo "[setup] python venv ready"
fi
