#!/usr/bin/env python3
"""kiln vs ONNX Runtime on this CPU: latency, GFLOP/s, % of peak, memory.

One command for the CPU performance table. For each model (backend-test
layout: DIR/<model>/model.onnx + test_data_set_0) it compiles the model with
kiln-compile (timed; --stats-json gives FLOPs and the arena), then at each
thread count alternates, for R rounds, kiln-run --bench (N timed runs after
warm-up) and an ONNX Runtime session (CPU EP, default graph optimisations,
intra-op threads = T, the same inputs, N timed runs after warm-up), and
reports the medians over all runs. Both engines warm up with W runs per
round (default 10): kiln-run starts a fresh process each round, whose first
runs fault in the mapped weights and arena (MobileNetV2: 14-16 ms for the
first runs against 10 ms after), while the ONNX Runtime session stays warm
across rounds. Alongside:
  - the CPU's peak (kiln-peak-flops: an FMA loop on T threads, same run),
    kiln's achieved GFLOP/s (model FLOPs from the cost interface / median)
    and its % of that peak;
  - memory: kiln's peak activation memory (the planned arena) and the
    anonymous resident memory a process adds by running the model (RssAnon
    after the runs minus before the first; weights are loaded or mapped
    before), for kiln-run and for ONNX Runtime (a fresh process per model
    and thread count);
  - at several threads, how far apart two threads are (kiln-core-latency:
    a cache line's round trip between them, before each round of each
    engine): a VM's vCPUs may be close (tens of ns) or on other dies
    (hundreds), which moves both engines' 2-thread latencies.
Prints a markdown table and writes OUT/cpu.md, OUT/cpu.csv and OUT/cpu.png
(a bar chart of the kiln/ORT ratios). A benchmark, not a test.

usage: cpu.py DIR [--models resnet50,mobilenet_v2,bert_base] [--threads 1,2]
                  [--runs 20] [--rounds 3] [--warmup 10] [--out bench/results]
                  [--kiln-flags "..."]
Make the models with: test/e2e/gen_models.py DIR --torch --transformers
(the test build already has them in build/test/e2e-models).
"""
import argparse
import json
import os
import shlex
import statistics
import math
import subprocess
import sys
import tempfile
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


def ort_session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def ort_memory_child(case, threads, runs):
    """In a fresh process: anonymous RSS added by running (not loading) the model."""
    sess = ort_session(os.path.join(case, "model.onnx"), threads)
    feeds = load_inputs(case, sess)
    before = status_kb("RssAnon")
    for _ in range(runs):
        sess.run(None, feeds)
    print(json.dumps({"rss_growth_bytes": max(0, status_kb("RssAnon") - before) * 1024}))


def ort_memory(case, threads):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--ort-memory-child", case,
                          "--threads", str(threads)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["rss_growth_bytes"]


def time_ort(sess, feeds, runs, warmup=3):
    for _ in range(warmup):
        sess.run(None, feeds)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        ts.append((time.perf_counter() - t) * 1e3)
    return ts


def bar_chart(rows, path):
    """PNG bar chart of kiln/ORT per model and thread count (Pillow)."""
    from PIL import Image, ImageDraw
    w, h, left, bottom, top = 120 + 90 * len(rows), 420, 60, 90, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    ymax = max(2.0, max(r["ratio"] for r in rows) * 1.15)
    y = lambda v: h - bottom - (h - bottom - top) * v / ymax
    d.line([(left, top), (left, h - bottom), (w - 20, h - bottom)], fill="black")
    step = 0.5 if ymax <= 4 else 1.0
    v = 0.0
    while v <= ymax:
        d.line([(left - 4, y(v)), (left, y(v))], fill="black")
        d.text((left - 40, y(v) - 6), f"{v:.1f}", fill="black")
        v += step
    d.line([(left, y(1.0)), (w - 20, y(1.0))], fill=(200, 0, 0))
    d.text((left + 4, y(1.0) + 2), "parity with ORT", fill=(200, 0, 0))
    for i, r in enumerate(rows):
        x0 = left + 20 + 90 * i
        colour = (60, 120, 200) if r["threads"] == 1 else (90, 170, 90)
        d.rectangle([x0, y(r["ratio"]), x0 + 60, h - bottom], fill=colour, outline="black")
        d.text((x0, y(r["ratio"]) - 14), f"{r['ratio']:.2f}", fill="black")
        d.text((x0, h - bottom + 6), r["model"][:12], fill="black")
        d.text((x0, h - bottom + 20), f"{r['threads']} thread(s)", fill="black")
    d.text((left, 10), "kiln / ONNX Runtime median latency (lower is better)", fill="black")
    img.save(path)


def core_round_trip(binp):
    """ns for a cache line to go from one thread to another and back (kiln-core-latency)."""
    out = subprocess.run([binp("kiln-core-latency")], check=True, stdout=subprocess.PIPE, text=True).stdout
    return float(out)


def round_trip_range(lo, hi):
    """The table cell for a row's core round trips: one figure, or min-max where they differ by 1.5x or more."""
    if math.isnan(lo):
        return "-"
    return f"{lo:.0f}" if hi < 1.5 * lo else f"{lo:.0f}-{hi:.0f}"


def cpu_description():
    """The CPU's model name and family/model numbers, and whether it has
    AVX-512F (kiln's runtime picks its AVX-512 kernels by that; results on
    CPUs with and without it differ)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        return "unknown"
    avx512 = "avx512f" in info.get("flags", "").split()
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), "
            f"AVX-512 {'yes' if avx512 else 'no'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--models", default="resnet50,mobilenet_v2,bert_base")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs per round, each engine")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--kiln-flags", default="")
    ap.add_argument("--ort-memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_memory_child:
        return ort_memory_child(args.ort_memory_child, int(args.threads), 5)
    if not args.dir:
        ap.error("DIR is required")
    binp = lambda name: os.path.join(args.build, "bin", name)
    thread_counts = [int(t) for t in args.threads.split(",")]
    peak = {t: float(subprocess.run([binp("kiln-peak-flops"), str(t), "1.0"], check=True,
                                    stdout=subprocess.PIPE, text=True).stdout) for t in thread_counts}
    print("peak (FMA loop): " + ", ".join(f"{peak[t]:.1f} GFLOP/s at {t} thread(s)" for t in thread_counts),
          file=sys.stderr)

    rows = []
    tmp = tempfile.mkdtemp(prefix="kiln-bench-")
    for model in args.models.split(","):
        case = os.path.join(args.dir, model)
        lib = os.path.join(tmp, model + ".so")
        stats = os.path.join(tmp, model + ".json")
        t0 = time.time()
        subprocess.run([binp("kiln-compile"), os.path.join(case, "model.onnx"), "-o", lib,
                        "--stats-json=" + stats] + shlex.split(args.kiln_flags), check=True)
        compile_s = time.time() - t0
        with open(stats) as f:
            st = json.load(f)
        for threads in thread_counts:
            sess = ort_session(os.path.join(case, "model.onnx"), threads)
            feeds = load_inputs(case, sess)
            kiln_ms, ort_ms, kiln_rss, trips = [], [], 0, []
            for _ in range(args.rounds):
                if threads > 1:
                    trips.append(core_round_trip(binp))
                out = subprocess.run([binp("kiln-run"), lib, "--inputs", os.path.join(case, "test_data_set_0"),
                                      "--bench", str(args.runs), "--warmup", str(args.warmup), "--threads", str(threads),
                                      "--json"], check=True, stdout=subprocess.PIPE, text=True).stdout
                res = json.loads(out)
                kiln_ms.append(res["latency_ms"]["median"])
                kiln_rss = max(kiln_rss, res["anon_rss_growth_bytes"])
                if threads > 1:
                    trips.append(core_round_trip(binp))
                ort_ms.extend(time_ort(sess, feeds, args.runs, args.warmup))
            del sess
            k, o = statistics.median(kiln_ms), statistics.median(ort_ms)
            gflops = st["flops"] / (k * 1e6)
            row = dict(model=model, threads=threads, kiln_ms=k, ort_ms=o, ratio=k / o, gflops=gflops,
                       pct_peak=100 * gflops / peak[threads], peak_gflops=peak[threads],
                       arena_mib=st["arena_bytes"] / 2**20, kiln_rss_mib=kiln_rss / 2**20,
                       ort_rss_mib=ort_memory(case, threads) / 2**20, compile_s=compile_s,
                       kernels=st["kernels"], gflop=st["flops"] / 1e9,
                       trip_ns_min=min(trips, default=float("nan")), trip_ns_max=max(trips, default=float("nan")))
            rows.append(row)
            print(f"{model} threads={threads}: kiln {k:.2f} ms, ORT {o:.2f} ms, ratio {k / o:.2f}", file=sys.stderr)

    header = ("| model | threads | kiln ms | ORT ms | kiln/ORT | kiln GFLOP/s | % of peak | "
              "kiln arena MiB | kiln run RSS MiB | ORT run RSS MiB | compile s | core round trip ns |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        trip = round_trip_range(r["trip_ns_min"], r["trip_ns_max"])
        lines.append(f"| {r['model']} | {r['threads']} | {r['kiln_ms']:.2f} | {r['ort_ms']:.2f} | {r['ratio']:.2f} | "
                     f"{r['gflops']:.1f} | {r['pct_peak']:.1f} | {r['arena_mib']:.1f} | {r['kiln_rss_mib']:.1f} | "
                     f"{r['ort_rss_mib']:.1f} | {r['compile_s']:.1f} | {trip} |")
    note = (f"\nCPU: {cpu_description()}. Peak (FMA loop, same run): " + ", ".join(f"{peak[t]:.1f} GFLOP/s at {t} thread(s)" for t in thread_counts)
            + f". Medians of {args.rounds} x {args.runs} runs after {args.warmup} warm-up runs each, kiln and ORT alternating. "
            "Core round trip: a cache line handed between two threads and back (kiln-core-latency), measured before "
            "each kiln and each ORT round of a multi-threaded row (min-max where they differ by 1.5x or more): on a VM "
            "whose vCPUs are sometimes far apart it moves the 2-thread figures of both engines. "
            "Model GFLOP per run: " + ", ".join(sorted({f"{r['model']} {r['gflop']:.2f}" for r in rows})) + ".\n")
    table = "\n".join(lines) + "\n" + note
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cpu.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "cpu.csv"), "w") as f:
        keys = list(rows[0].keys())
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + "\n")
    bar_chart(rows, os.path.join(args.out, "cpu.png"))
    print(f"wrote {args.out}/cpu.md, cpu.csv, cpu.png", file=sys.stderr)


if __name__ == "__main__":
    main()
