#!/usr/bin/env python3
"""kiln vs ONNX Runtime latency on the same machine, inputs and thread count.

For each model (backend-test layout: DIR/<model>/model.onnx + test_data_set_0)
compiles it with kiln-compile (timed), then alternates kiln-run --bench and an
ONNX Runtime session (CPU EP, default graph optimisations, intra-op threads =
T) for R rounds of N timed runs each, and reports medians over all runs.
Prints a markdown table; --csv FILE also writes it as CSV.

usage: compare_ort.py DIR [--models resnet50,mobilenet_v2] [--threads 1,2]
                          [--runs 20] [--rounds 3] [--csv out.csv]
Make the models with: test/e2e/gen_models.py DIR --torch --only resnet50,mobilenet_v2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper as nh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_inputs(case, sess):
    feeds = {}
    for i, inp in enumerate(sess.get_inputs()):
        t = onnx.TensorProto()
        with open(os.path.join(case, "test_data_set_0", f"input_{i}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        feeds[inp.name] = nh.to_array(t)
    return feeds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--csv")
    args = ap.parse_args()

    rows = []
    for model in args.models.split(","):
        case = os.path.join(args.dir, model)
        lib = os.path.join(case, "bench-x86_64.so")
        t0 = time.time()
        subprocess.run([os.path.join(args.build, "bin", "kiln-compile"), os.path.join(case, "model.onnx"),
                        "-o", lib], check=True)
        compile_s = time.time() - t0
        for threads in [int(t) for t in args.threads.split(",")]:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(os.path.join(case, "model.onnx"), so, providers=["CPUExecutionProvider"])
            feeds = load_inputs(case, sess)
            kiln_times, ort_times = [], []
            for _ in range(args.rounds):
                out = subprocess.run([os.path.join(args.build, "bin", "kiln-run"), lib, "--inputs",
                                      os.path.join(case, "test_data_set_0"), "--bench", str(args.runs),
                                      "--warmup", "3", "--threads", str(threads), "--json"],
                                     check=True, stdout=subprocess.PIPE, text=True).stdout
                kiln_times.append(json.loads(out)["latency_ms"]["median"])
                for _ in range(3):
                    sess.run(None, feeds)
                ts = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    sess.run(None, feeds)
                    ts.append((time.perf_counter() - t) * 1e3)
                ort_times.append(statistics.median(ts))
            k, o = statistics.median(kiln_times), statistics.median(ort_times)
            rows.append((model, threads, compile_s, k, o, k / o))
            print(f"{model} threads={threads}: kiln {k:.2f} ms, ORT {o:.2f} ms", file=sys.stderr)

    header = "| model | threads | kiln compile s | kiln median ms | ORT median ms | kiln/ORT |"
    print(header)
    print("|---|---|---|---|---|---|")
    for m, t, c, k, o, r in rows:
        print(f"| {m} | {t} | {c:.1f} | {k:.2f} | {o:.2f} | {r:.2f} |")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("model,threads,kiln_compile_s,kiln_median_ms,ort_median_ms,ratio\n")
            for row in rows:
                f.write(",".join(str(x) for x in row) + "\n")


if __name__ == "__main__":
    main()
