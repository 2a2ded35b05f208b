#!/usr/bin/env python3
"""Prunes the end-to-end models with kiln-prune and writes them as cases.

For each MODEL in --models and each rate in --rates, runs
`kiln-prune DIR/MODEL/model.onnx --rate R --block B` and writes the pruned
model as OUT/MODEL_sRR (backend-test layout) with ONNX Runtime's outputs on
the original case's inputs: ORT running the same pruned model is the
reference the sparse code is checked against (run_e2e.py).

usage: gen_pruned.py DIR OUT --prune BIN [--models a,b] [--rates 0.5,0.75,0.9] [--block 4x16]
"""
import argparse
import os
import subprocess
import sys

import onnx
from onnx import numpy_helper as nh

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_models import write_case  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("out")
    ap.add_argument("--prune", required=True, help="the kiln-prune binary")
    ap.add_argument("--models", default="resnet50,mobilenet_v2,bert_base")
    ap.add_argument("--rates", default="0.5,0.75,0.9")
    ap.add_argument("--block", default="4x16")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for model in args.models.split(","):
        src = os.path.join(args.dir, model)
        inputs = {}
        data = os.path.join(src, "test_data_set_0")
        for f in sorted(os.listdir(data)):
            if f.startswith("input_"):
                t = onnx.TensorProto()
                with open(os.path.join(data, f), "rb") as fh:
                    t.ParseFromString(fh.read())
                inputs[t.name] = nh.to_array(t)
        for rate in args.rates.split(","):
            name = f"{model}_s{int(round(float(rate) * 100))}"
            tmp = os.path.join(args.out, name + ".tmp.onnx")
            p = subprocess.run([args.prune, os.path.join(src, "model.onnx"), "-o", tmp, "--rate", rate,
                                "--block", args.block], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                sys.exit(f"{name}: kiln-prune failed: {p.stderr.strip()}")
            print(f"{name}: {p.stdout.strip().splitlines()[-2]}", file=sys.stderr)
            m = onnx.load(tmp)
            os.remove(tmp)
            write_case(args.out, name, m, inputs)


if __name__ == "__main__":
    main()
