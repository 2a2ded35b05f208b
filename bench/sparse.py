#!/usr/bin/env python3
"""BCR sparsity: kiln sparse vs kiln dense vs ONNX Runtime on pruned models.

For each model (backend-test layout: DIR/<model>/model.onnx +
test_data_set_0) and rate, kiln-prune writes the pruned model (BCR blocks,
--block); kiln-compile builds it twice, sparse (--sparsity=auto) and dense
(--sparsity=off). Then, at each thread count, R rounds alternate
kiln-run --bench on both libraries and an ONNX Runtime session on the same
pruned model and inputs; medians over all runs are reported. Alongside:
  - per-layer speedups: kiln-run --profile at 1 thread on both libraries,
    alternating, --profile-rounds times (each kernel's fastest round);
    each kernel kiln made sparse ([bcr] in its label) is matched with the
    same kernel of the dense library (same fusion plan, same order) and
    with its layer in --stats-json (achieved sparsity s); the table gives
    the geometric mean speedup and the ideal 1/(1-s);
  - sizes: the pruned .onnx, and the sparse and dense libraries.
Prints markdown tables and writes OUT/sparse.md and OUT/sparse.csv. A
benchmark, not a test (timings on a shared machine are noisy: use rounds).

usage: sparse.py DIR [--models resnet50,bert_base] [--rates 0.5,0.75,0.9]
                     [--block 4x16] [--threads 1,2] [--runs 10] [--rounds 3]
                     [--profile-runs 10] [--profile-rounds 3] [--out bench/results]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu import load_inputs, ort_session, time_ort  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(build, name):
    return os.path.join(build, "bin", name)


def run_json(cmd):
    return json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)


def kiln_bench(build, lib, case, threads, runs, warmup=10):
    # Each call is a fresh process, whose first runs fault in the weights:
    # warm up as long as the ONNX Runtime session (kept across rounds) is.
    r = run_json([tool(build, "kiln-run"), lib, "--inputs", os.path.join(case, "test_data_set_0"), "--bench",
                  str(runs), "--warmup", str(warmup), "--threads", str(threads), "--json"])
    return [r["latency_ms"]["median"]]  # one sample per round: its median


def kiln_profile(build, lib, case, runs):
    r = run_json([tool(build, "kiln-run"), lib, "--inputs", os.path.join(case, "test_data_set_0"), "--profile",
                  str(runs), "--threads", "1", "--json"])
    return r["kernels"]


def min_kernels(best, ks):
    """Per kernel, the smaller median of two profiles of the same library."""
    if best is None:
        return ks
    return [dict(k, median_ms=min(k["median_ms"], b["median_ms"])) for k, b in zip(ks, best)]


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--models", default="resnet50,bert_base")
    ap.add_argument("--rates", default="0.5,0.75,0.9")
    ap.add_argument("--block", default="4x16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile-runs", type=int, default=10)
    ap.add_argument("--profile-rounds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    work = os.path.join(args.out, "sparse")
    os.makedirs(work, exist_ok=True)

    per_rate = {}  # rate -> (speedups, ideals) over all models' pruned layers
    whole, layers, sizes, csv = [], [], [], ["model,rate,sparsity,threads,kiln_sparse_ms,kiln_dense_ms,ort_ms"]
    for model in args.models.split(","):
        src = os.path.join(args.dir, model)
        for rate in args.rates.split(","):
            name = f"{model}_s{int(round(float(rate) * 100))}"
            case = os.path.join(work, name)
            os.makedirs(os.path.join(case, "test_data_set_0"), exist_ok=True)
            for f in os.listdir(os.path.join(src, "test_data_set_0")):
                if f.startswith("input_"):
                    with open(os.path.join(src, "test_data_set_0", f), "rb") as i, \
                         open(os.path.join(case, "test_data_set_0", f), "wb") as o:
                        o.write(i.read())
            onnx_path = os.path.join(case, "model.onnx")
            subprocess.run([tool(args.build, "kiln-prune"), os.path.join(src, "model.onnx"), "-o", onnx_path,
                            "--rate", rate, "--block", args.block], check=True, stdout=subprocess.DEVNULL)
            libs = {}
            for kind, flag in [("sparse", "--sparsity=auto"), ("dense", "--sparsity=off")]:
                libs[kind] = os.path.join(case, f"{kind}.so")
                subprocess.run([tool(args.build, "kiln-compile"), onnx_path, "-o", libs[kind], flag,
                                "--stats-json=" + libs[kind] + ".json"], check=True)
            with open(libs["sparse"] + ".json") as f:
                stats = json.load(f)
            sparse_layers = [l for l in stats["sparse_layers"] if l["sparse"]]
            pruned = sum(l["dense_bytes"] for l in stats["sparse_layers"])
            zeros = sum(l["sparsity"] * l["dense_bytes"] for l in stats["sparse_layers"])
            s = zeros / pruned if pruned else 0.0
            sizes.append((name, os.path.getsize(onnx_path), os.path.getsize(libs["sparse"]),
                          os.path.getsize(libs["dense"])))
            for t in threads:
                sess = ort_session(onnx_path, t)
                feeds = load_inputs(case, sess)
                ts = {"sparse": [], "dense": [], "ort": []}
                for _ in range(args.rounds):
                    for kind in ("sparse", "dense"):
                        ts[kind] += kiln_bench(args.build, libs[kind], case, t, args.runs)
                    ts["ort"] += time_ort(sess, feeds, args.runs)
                med = {k: statistics.median(v) for k, v in ts.items()}
                whole.append((model, rate, s, t, med["sparse"], med["dense"], med["ort"]))
                csv.append(f"{model},{rate},{s:.4f},{t},{med['sparse']:.3f},{med['dense']:.3f},{med['ort']:.3f}")
                print(f"{name} {t}T: sparse {med['sparse']:.1f} ms, dense {med['dense']:.1f} ms, "
                      f"ORT {med['ort']:.1f} ms", file=sys.stderr)
            # Profiles alternate sparse/dense for several rounds; each kernel
            # keeps its fastest round (this VM has slow phases of seconds).
            ks = kd = None
            for _ in range(args.profile_rounds):
                ks = min_kernels(ks, kiln_profile(args.build, libs["sparse"], case, args.profile_runs))
                kd = min_kernels(kd, kiln_profile(args.build, libs["dense"], case, args.profile_runs))
            bcr = [i for i, k in enumerate(ks) if "[bcr]" in k["label"]]
            speedups, ideals = [], []
            for i, l in zip(bcr, sparse_layers):
                speedups.append(kd[i]["median_ms"] / ks[i]["median_ms"])
                ideals.append(1.0 / (1.0 - l["sparsity"]))
            layers.append((model, rate, len(bcr), geomean(speedups), geomean(ideals),
                           min(speedups, default=float("nan")), max(speedups, default=float("nan"))))
            per_rate.setdefault(rate, ([], []))
            per_rate[rate][0].extend(speedups)
            per_rate[rate][1].extend(ideals)

    out = [f"BCR {args.block} blocks (kiln-prune), medians of {args.rounds} rounds x {args.runs} runs\n",
           "| model | rate | sparsity | threads | kiln sparse ms | kiln dense ms | ORT ms | vs dense | vs ORT |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, r, s, t, ks_, kd_, o in whole:
        out.append(f"| {m} | {r} | {100 * s:.1f}% | {t} | {ks_:.1f} | {kd_:.1f} | {o:.1f} | {kd_ / ks_:.2f}x | "
                   f"{o / ks_:.2f}x |")
    out += ["", f"Pruned layers (kiln-run --profile, 1 thread, best of {args.profile_rounds} alternating rounds): "
            "sparse kernel vs the same dense kernel\n",
            "| model | rate | layers | geomean speedup | geomean ideal 1/(1-s) | min | max |",
            "|---|---|---|---|---|---|---|"]
    for m, r, n, g, i, lo, hi in layers:
        out.append(f"| {m} | {r} | {n} | {g:.2f}x | {i:.2f}x | {lo:.2f}x | {hi:.2f}x |")
    if len(args.models.split(",")) > 1:  # the acceptance figure: all models' pruned layers together
        for r, (sp, ide) in per_rate.items():
            out.append(f"| all models | {r} | {len(sp)} | {geomean(sp):.2f}x | {geomean(ide):.2f}x | "
                       f"{min(sp, default=float('nan')):.2f}x | {max(sp, default=float('nan')):.2f}x |")
    out += ["", "| model | pruned .onnx | sparse .so | dense .so | sparse / dense |", "|---|---|---|---|---|"]
    for n, o, sp, d in sizes:
        out.append(f"| {n} | {o / 1e6:.1f} MB | {sp / 1e6:.1f} MB | {d / 1e6:.1f} MB | {100 * sp / d:.0f}% |")
    text = "\n".join(out) + "\n"
    print(text)
    with open(os.path.join(args.out, "sparse.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "sparse.csv"), "w") as f:
        f.write("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
