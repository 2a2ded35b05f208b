#!/usr/bin/env python3
"""Compiles and runs backend-test-layout model folders, comparing with ONNX Runtime.

For each DIR/<case>/model.onnx: kiln-compile it for the target, run it with
kiln-run --inputs/--expect on test_data_set_0 (under qemu-aarch64 for the
aarch64 target), and classify the case as pass, mismatch, compile error or
crash/timeout. Prints one line per case and a final 'N passed, N failed'.
Exit status 0 only if every case passed.

usage: run_e2e.py DIR [--target x86_64|aarch64|opencl] [--only a,b] [--build build]
                      [--build-aarch64 build-aarch64] [--rtol R --atol A]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(cmd, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.time() - t0
    except subprocess.TimeoutExpired:
        return None, "", "timeout after %ds" % timeout, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--only", default="")
    ap.add_argument("--exclude", default="", help="comma-separated case names to skip")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--build-aarch64", default=os.path.join(ROOT, "build-aarch64"))
    ap.add_argument("--rtol", default="1e-3")
    ap.add_argument("--atol", default="1e-4")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--kiln-flags", default="", help="extra kiln-compile flags, space separated")
    args = ap.parse_args()

    only = [s for s in args.only.split(",") if s]
    exclude = set(s for s in args.exclude.split(",") if s)
    names = only or sorted(d for d in os.listdir(args.dir)
                           if os.path.isfile(os.path.join(args.dir, d, "model.onnx")) and d not in exclude)
    compiler = os.path.join(args.build, "bin", "kiln-compile")
    if args.target == "aarch64":
        runner = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", os.path.join(args.build_aarch64, "bin", "kiln-run")]
    else:
        runner = [os.path.join(args.build, "bin", "kiln-run")]
    if args.target == "opencl":
        rc, out, err, _ = run(runner + ["--list-devices"], 60)
        if rc != 0:
            print(f"SKIP: no OpenCL device ({(err or out).strip()[:200]})")
            return 77  # ctest SKIP_RETURN_CODE

    passed = failed = 0
    for name in names:
        case = os.path.join(args.dir, name)
        if not os.path.isfile(os.path.join(case, "model.onnx")):
            print(f"FAIL  {name}: no such case")
            failed += 1
            continue
        tag = "-unfused" if args.kiln_flags else ""
        lib = os.path.join(case, f"model-{args.target}{tag}.so")
        rc, out, err, ct = run([compiler, os.path.join(case, "model.onnx"), f"--target={args.target}", "-o", lib]
                               + args.kiln_flags.split(),
                               args.timeout)
        if rc != 0:
            kind = "CRASH" if rc is None or rc < 0 else "COMPILE-ERROR"
            print(f"FAIL  {name}: {kind}: {err.strip().splitlines()[0] if err.strip() else rc}")
            failed += 1
            continue
        data = os.path.join(case, "test_data_set_0")
        rc, out, err, rt = run(runner + [lib, "--inputs", data, "--expect", data, "--rtol", args.rtol,
                                         "--atol", args.atol, "--threads", args.threads, "--json"], args.timeout)
        if rc == 0:
            res = json.loads(out)
            worst = max((o.get("max_abs_err", 0) for o in res["outputs"]), default=0)
            print(f"PASS  {name}  (compile {ct:.1f}s, run {rt:.1f}s, max abs err {worst:.2g})")
            passed += 1
        elif rc == 1:
            res = json.loads(out)
            bad = [f"{o['name']} abs {o['max_abs_err']} rel {o['max_rel_err']}" for o in res["outputs"] if not o["ok"]]
            print(f"FAIL  {name}: MISMATCH: {'; '.join(bad)}")
            failed += 1
        else:
            kind = "CRASH" if rc is None or rc < 0 else "RUN-ERROR"
            print(f"FAIL  {name}: {kind}: {err.strip()[:300]}")
            failed += 1
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
