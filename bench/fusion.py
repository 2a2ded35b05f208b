#!/usr/bin/env python3
"""Fusion figures and the speedup of rewriting + fusion, per model.

For each model (backend-test layout: DIR/<model>/model.onnx + test_data_set_0):
  - ONNX nodes, ops after rewriting and kernels (fusion blocks) from
    kiln-compile --stats-json, and the fusion rate (nodes / kernels);
  - the node count of ONNX Runtime's own optimised graph (ORT_ENABLE_ALL,
    written with optimized_model_filepath), side by side with kiln's kernels;
  - latency of the default build and of --no-rewrite --no-fusion, measured
    alternately with kiln-run --bench in the same run (median of all runs),
    at the given thread count, and the speedup;
  - at several threads, the core round trip before each round
    (kiln-core-latency; see bench/cpu.py).
Prints a markdown table; --csv FILE also writes it as CSV. Not a test.

usage: fusion.py DIR [--models resnet50,mobilenet_v2,bert_base,gpt2_decoder]
                     [--threads 2] [--runs 20] [--rounds 3]
Make the models with: test/e2e/gen_models.py DIR --torch --transformers
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

import onnx
import onnxruntime as ort

from cpu import core_round_trip, round_trip_range  # bench/cpu.py, next to this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_model(build, model, out, flags):
    stats = out + ".json"
    subprocess.run([os.path.join(build, "bin", "kiln-compile"), model, "-o", out, "--stats-json=" + stats]
                   + flags, check=True)
    with open(stats) as f:
        return json.load(f)


def bench(build, lib, case, threads, runs, warmup):
    p = subprocess.run([os.path.join(build, "bin", "kiln-run"), lib, "--inputs",
                        os.path.join(case, "test_data_set_0"), "--bench", str(runs), "--warmup", str(warmup),
                        "--threads", str(threads), "--json"], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(p.stdout)


def ort_optimized_nodes(model):
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return len(onnx.load(so.optimized_model_filepath).graph.node)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--models", default="resnet50,mobilenet_v2,bert_base,gpt2_decoder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=10,
                    help="untimed runs per round (each round is a fresh kiln-run process, whose first runs "
                         "fault in the weights)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--csv")
    args = ap.parse_args()

    header = ["model", "onnx nodes", "ops after rewrite", "kiln kernels", "fusion rate", "ORT optimised nodes",
              "intermediate MB saved", "fused ms", "unfused ms", "speedup"]
    if args.threads > 1:
        header.append("core round trip ns")
    rows = []
    for name in args.models.split(","):
        case = os.path.join(args.dir, name)
        model = os.path.join(case, "model.onnx")
        fused_lib = os.path.join(case, "bench-fused.so")
        plain_lib = os.path.join(case, "bench-unfused.so")
        st = compile_model(args.build, model, fused_lib, [])
        compile_model(args.build, model, plain_lib, ["--no-rewrite", "--no-fusion"])
        times = {"fused": [], "unfused": []}
        trips = []
        for _ in range(args.rounds):
            for key, lib in (("fused", fused_lib), ("unfused", plain_lib)):
                if args.threads > 1:
                    trips.append(core_round_trip(lambda name: os.path.join(args.build, "bin", name)))
                r = bench(args.build, lib, case, args.threads, args.runs, args.warmup)
                times[key].append(r["latency_ms"]["median"])
        fused, unfused = statistics.median(times["fused"]), statistics.median(times["unfused"])
        rows.append([name, st["onnx_nodes"], st["ops_after_rewrite"], st["kernels"],
                     f"{st['onnx_nodes'] / max(1, st['kernels']):.2f}x", ort_optimized_nodes(model),
                     f"{st['intermediate_bytes_saved'] / 1e6:.1f}", f"{fused:.2f}", f"{unfused:.2f}",
                     f"{unfused / fused:.2f}x"])
        if trips:
            rows[-1].append(round_trip_range(min(trips), max(trips)))
        print(" | ".join(str(c) for c in rows[-1]), flush=True)

    print()
    print(f"threads: {args.threads}; latency = median over {args.rounds} alternating rounds of "
          f"{args.runs} runs (kiln-run --bench)" + ("; core round trip: a cache line between two threads and "
                                                    "back (kiln-core-latency) before each round" if args.threads > 1
                                                    else ""))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(",".join(header) + "\n")
            for r in rows:
                f.write(",".join(str(c) for c in r) + "\n")


if __name__ == "__main__":
    main()
