#!/usr/bin/env python3
"""Compiles every input in test/fuzz/regressions/ (inputs that once crashed
the compiler, found by kiln-fuzz or by hand) and fails if any of them still
crashes, hangs or ends without a diagnostic: the only acceptable outcomes are
success (exit 0) or a clean refusal (exit 1 with an 'error:' line).

usage: check_regressions.py --build BUILD_DIR [DIR]
"""
import argparse
import os
import subprocess
import sys
import tempfile

BAD_MARKERS = ("PLEASE submit a bug report", "LLVM ERROR", "Sanitizer", "runtime error:", "Assertion")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "regressions"))
    args = ap.parse_args()
    compiler = os.path.join(args.build, "bin", "kiln-compile")
    files = sorted(f for f in os.listdir(args.dir) if not f.startswith("."))
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            path = os.path.join(args.dir, f)
            try:
                r = subprocess.run([compiler, path, "-O0", "-o", os.path.join(tmp, "out.so")],
                                   capture_output=True, text=True, errors="replace", timeout=120)
                err = r.stderr
                ok = (r.returncode == 0 or (r.returncode == 1 and "error:" in err)) and \
                    not any(m in err for m in BAD_MARKERS)
                why = f"exit {r.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"
            except subprocess.TimeoutExpired:
                ok, why = False, "timeout (120 s)"
            print(f"{'PASS' if ok else 'FAIL'}  {f}  ({why})")
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not files else 0


if __name__ == "__main__":
    sys.exit(main())
