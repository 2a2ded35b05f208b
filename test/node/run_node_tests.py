#!/usr/bin/env python3
"""Runs the ONNX backend node tests shipped in the `onnx` package through kiln.

Every folder of onnx/backend/test/data/node is compiled with kiln-compile and
each test_data_set_* is run with kiln-run --expect. A folder is classified as
  pass           compiled, and every data set matches (rtol 1e-3, atol 1e-4)
  wrong          compiled and ran, but an output differs       (a bug)
  unsupported    kiln-compile refused it with a diagnostic     (honest)
  run-error      kiln-run reported an error (exit 2)           (a bug)
  crash          a signal, an exit code kiln never uses, or a timeout (a bug)
  disputed       the folder's expected output contradicts the ONNX spec (see
                 DISPUTED); kiln's output is checked against the spec instead,
                 by a numpy oracle, and a mismatch with it is "wrong"
A model refused because some graph inputs (axes, shapes, pads, scales, ...)
must be compile-time constants is retried per data set with exactly those
inputs (the ones kiln-compile names) frozen to that data set's values
(kiln-compile --freeze-input); such passes are counted and listed separately
as "pass (frozen inputs)".
Folders whose model uses sequences, optionals, strings or training ops are
also counted separately (they may stay unsupported).

Prints one line per non-passing folder, a summary table, and the line
'N passed, N failed' where failed counts only bugs (wrong, run-error, crash).
With --doc FILE writes the per-op coverage document (docs/op-coverage.md).
Exit status 0 when there is no bug and the pass count is at least --min-pass.

usage: run_node_tests.py [--build build] [--jobs 2] [--only substr] [--doc FILE] [--min-pass N]
"""
import argparse
import collections
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUGS = ("wrong", "run-error", "crash")
TRAINING_OPS = {"Adagrad", "Adam", "Momentum", "Gradient", "NegativeLogLikelihoodLoss",
                "SoftmaxCrossEntropyLoss"}


def qlinearmatmul_spec(ins):
    """QLinearMatMul as its spec says: int32 accumulation, then
    y = saturate(round(acc * a_scale * b_scale / y_scale) + y_zero_point)."""
    import numpy as np
    a, sa, za, b, sb, zb, sy, zy = ins
    acc = np.matmul(a.astype(np.int32) - za.astype(np.int32), b.astype(np.int32) - zb.astype(np.int32))
    y = np.rint(acc * (sa.astype(np.float32) * sb.astype(np.float32) / sy.astype(np.float32))) + zy
    info = np.iinfo(zy.dtype)
    return [np.clip(y, info.min, info.max).astype(zy.dtype)]


# Folders whose expected outputs contradict the spec: (reason, spec oracle).
_QLMM = ("the expected output wraps around int8 (numpy astype) where the QLinearMatMul spec "
         "saturates", qlinearmatmul_spec)
DISPUTED = {f"test_qlinearmatmul_{d}_int8_{t}": _QLMM for d in ("2D", "3D") for t in ("float16", "float32")}


def check_against_spec(name, lib, data, build, workdir, timeout):
    """For a DISPUTED folder: kiln's outputs against the spec oracle's."""
    import numpy as np
    from onnx import numpy_helper
    outdir = os.path.join(workdir, name + "_spec_" + os.path.basename(data))
    os.makedirs(outdir, exist_ok=True)
    rc, out, err = run([os.path.join(build, "bin", "kiln-run"), lib, "--inputs", data, "--outputs", outdir],
                       timeout)
    if rc != 0:
        return False, f"kiln-run exit {rc}: {first_error(err)}"
    n = len(glob.glob(os.path.join(data, "input_*.pb")))
    ins = [numpy_helper.to_array(onnx.load_tensor(os.path.join(data, f"input_{i}.pb"))) for i in range(n)]
    want = DISPUTED[name][1](ins)
    for i, w in enumerate(want):
        got = numpy_helper.to_array(onnx.load_tensor(os.path.join(outdir, f"output_{i}.pb")))
        if got.dtype != w.dtype or got.shape != w.shape or not np.array_equal(got, w):
            return False, f"output {i} differs from the spec oracle"
    return True, ""


def node_dir():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")


def special_kind(model):
    """'sequence', 'optional', 'string', 'training' or None."""
    def vtype(t):
        if t.HasField("sequence_type"):
            return "sequence"
        if t.HasField("optional_type"):
            return "optional"
        if t.HasField("tensor_type") and t.tensor_type.elem_type == onnx.TensorProto.STRING:
            return "string"
        return None
    for vi in list(model.graph.input) + list(model.graph.output):
        k = vtype(vi.type)
        if k:
            return k
    for n in model.graph.node:
        if n.domain == "ai.onnx.preview.training" or n.op_type in TRAINING_OPS:
            return "training"
        if "Sequence" in n.op_type or n.op_type in ("SplitToSequence", "ConcatFromSequence"):
            return "sequence"
        if "Optional" in n.op_type:
            return "optional"
        if n.op_type.startswith("String") or n.op_type in ("RegexFullMatch", "TfIdfVectorizer"):
            return "string"
    return None


def main_op(name, model):
    ops = [n.op_type for n in model.graph.node]
    if len(set(ops)) == 1:
        return ops[0]
    key = name[len("test_"):].replace("_", "").lower()
    best = ""
    for op in set(ops):
        if key.startswith(op.lower()) and len(op) > len(best):
            best = op
    return best or (ops[0] if ops else "?")


def run(cmd, timeout):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if sanitizer_report(p.stderr):
            return -1, p.stdout, p.stderr  # counted as a crash
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", f"timeout after {timeout}s"


SANITIZER_MARKS = ("runtime error:", "Sanitizer", "LLVM ERROR", "PLEASE submit a bug report")


def sanitizer_report(text):
    """A sanitizer, LLVM or assertion report: a bug, whatever the exit code."""
    return any(m in text for m in SANITIZER_MARKS)


def first_error(text):
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return text.strip().splitlines()[0] if text.strip() else ""


# Extra kiln-compile flags (--target=...), set from the command line.
TARGET_FLAGS = []


def check(folder, build, workdir, timeout):
    name = os.path.basename(folder)
    try:
        model = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
        op, special = main_op(name, model), special_kind(model)
    except Exception as e:  # noqa: BLE001 - a model onnx itself cannot read
        op, special = "?", None
    lib = os.path.join(workdir, name + ".so")
    rc, out, err = run([os.path.join(build, "bin", "kiln-compile"), os.path.join(folder, "model.onnx"), "-o", lib]
                       + TARGET_FLAGS,
                       timeout)
    if rc is None or rc < 0 or rc not in (0, 1):
        return name, op, special, "crash", f"kiln-compile: {err.strip()[-300:]}"
    frozen_names = []
    if rc == 1:
        # Pin the graph inputs the compiler names as needing constant values,
        # as long as each retry names new ones (checked on the first data set).
        names = [vi.name for vi in graph_inputs(model)] if op != "?" else []
        data0 = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))[:1]
        while rc == 1 and data0:
            need = [n for n in re.findall(r"'([^']*)' is computed at run time", err) if n in names]
            if not need or set(need) <= set(frozen_names):
                break
            frozen_names += [n for n in need if n not in frozen_names]
            cmd = compile_cmd(build, folder, lib, names, frozen_names, data0[0])
            rc, out, err = run(cmd, timeout)
        if rc is None or rc < 0 or rc not in (0, 1):
            return name, op, special, "crash", f"kiln-compile: {err.strip()[-300:]}"
        if rc == 1:
            return name, op, special, "unsupported", first_error(err)
    frozen = ",".join(frozen_names)
    disputed = False
    for data in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
        inputs = data
        if frozen:
            # Specialise the model on this data set's integer inputs; the
            # other inputs are renumbered for kiln-run.
            inputs = os.path.join(workdir, name + "_" + os.path.basename(data))
            os.makedirs(inputs, exist_ok=True)
            names = [vi.name for vi in graph_inputs(model)]
            cmd = compile_cmd(build, folder, lib, names, frozen_names, data)
            k = 0
            for i in range(len(names)):
                if names[i] not in frozen_names:
                    shutil.copy(os.path.join(data, f"input_{i}.pb"), os.path.join(inputs, f"input_{k}.pb"))
                    k += 1
            rc, out, err = run(cmd, timeout)
            if rc is None or rc < 0 or rc not in (0, 1):
                return name, op, special, "crash", f"kiln-compile: {err.strip()[-300:]}"
            if rc == 1:
                return name, op, special, "unsupported", first_error(err)
        rc, out, err = run([os.path.join(build, "bin", "kiln-run"), lib, "--inputs", inputs, "--expect", data],
                           timeout)
        if rc == 1:
            bad = [l.strip() for l in out.splitlines() if "MISMATCH" in l]
            if name in DISPUTED:
                ok, why = check_against_spec(name, lib, data, build, workdir, timeout)
                if ok:
                    disputed = True
                    continue
                return name, op, special, "wrong", f"{os.path.basename(data)}: {why}"
            return name, op, special, "wrong", f"{os.path.basename(data)}: {'; '.join(bad)}"
        if rc == 2:
            return name, op, special, "run-error", first_error(err)
        if rc != 0:
            return name, op, special, "crash", f"kiln-run: {err.strip()[-300:]}"
    try:
        os.remove(lib)
    except OSError:
        pass
    if disputed:
        return name, op, special, "disputed", DISPUTED[name][0] + "; kiln matches the spec oracle"
    return name, op, special, "pass", f"frozen inputs: {frozen}" if frozen else ""


def graph_inputs(model):
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def compile_cmd(build, folder, lib, names, frozen, data):
    """kiln-compile with the named graph inputs frozen to data's values."""
    cmd = [os.path.join(build, "bin", "kiln-compile"), os.path.join(folder, "model.onnx"), "-o", lib] + TARGET_FLAGS
    return cmd + [f"--freeze-input={n}={os.path.join(data, f'input_{names.index(n)}.pb')}" for n in frozen]


def write_doc(path, results, elapsed):
    by_op = collections.defaultdict(list)
    for r in results:
        by_op[r[1]].append(r)
    counts = collections.Counter(r[3] for r in results)
    special = collections.Counter(r[2] for r in results if r[2])
    total = len(results)
    with open(path, "w") as f:
        f.write("# ONNX backend node test coverage\n\n")
        f.write("Generated by `test/node/run_node_tests.py --doc docs/op-coverage.md` from a real run "
                f"over the node tests of onnx {onnx.__version__} (x86-64); do not edit by hand.\n\n")
        frozen = [r for r in results if r[3] == "pass" and r[4]]
        f.write(f"**{counts['pass']} of {total} folders pass ({100.0 * counts['pass'] / total:.1f}%)**, "
                f"{len(frozen)} of them with the graph inputs kiln-compile names as needing constant values "
                "(axes, shapes, pads, scales, ...) frozen to the data set's values by `kiln-compile --freeze-input`, "
                "since kiln compiles static shapes. ")
        f.write(", ".join(f"{k}: {counts[k]}" for k in ("unsupported", "disputed", "wrong", "run-error", "crash")))
        f.write(f". Suite time {elapsed:.0f} s.\n\n")
        special_pass = sum(1 for r in results if r[2] and r[3] == "pass")
        f.write("Folders using sequences, optionals, strings or training ops (may stay unsupported): "
                + ", ".join(f"{k} {v}" for k, v in sorted(special.items()))
                + f" (total {sum(special.values())}, of which {special_pass} pass: the loss ops).\n\n")
        reasons = collections.Counter(r[4] for r in results if r[3] == "unsupported")
        f.write("## Most common reasons for unsupported folders\n\n| count | diagnostic |\n|---|---|\n")
        for reason, n in reasons.most_common(15):
            f.write(f"| {n} | {reason.replace('|', '/')} |\n")
        f.write("\n## Per op\n\n| op | pass | total | failing tests (status) |\n|---|---|---|---|\n")
        for op in sorted(by_op):
            rs = by_op[op]
            npass = sum(1 for r in rs if r[3] == "pass")
            failing = ", ".join(f"{r[0][5:]} ({r[3]})" for r in sorted(rs) if r[3] != "pass")
            nfrozen = sum(1 for r in rs if r[3] == "pass" and r[4])
            if nfrozen:
                npass = f"{npass} ({nfrozen} frozen)"
            f.write(f"| {op} | {npass} | {len(rs)} | {failing} |\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="folders whose name contains this")
    ap.add_argument("--every", type=int, default=1, help="only every N-th folder (sorted by name): a sample")
    ap.add_argument("--write-passes", help="write the names of the passing folders to this file")
    ap.add_argument("--list", help="file with folder names to run, one per line (e.g. those that pass on CPU)")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--doc")
    ap.add_argument("--min-pass", type=int, default=0)
    ap.add_argument("--target", default="", help="kiln-compile --target (default: the host CPU); "
                    "opencl runs on the runtime's OpenCL device")
    args = ap.parse_args()
    if args.target:
        TARGET_FLAGS.append(f"--target={args.target}")
    if args.target == "opencl":
        p = subprocess.run([os.path.join(args.build, "bin", "kiln-run"), "--list-devices"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            print(f"SKIP: no OpenCL device ({(p.stderr or p.stdout).strip()[:200]})")
            return 77  # ctest SKIP_RETURN_CODE

    folders = sorted(d for d in glob.glob(os.path.join(node_dir(), "test_*")) if args.only in os.path.basename(d))
    if args.list:
        with open(args.list) as f:
            wanted = set(line.strip() for line in f if line.strip())
        folders = [d for d in folders if os.path.basename(d) in wanted]
    folders = folders[::max(1, args.every)]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda d: check(d, args.build, work, args.timeout), folders))
    elapsed = time.time() - t0
    for name, op, special, status, msg in results:
        if status != "pass":
            print(f"{status.upper():12} {name} [{op}] {msg}")
    counts = collections.Counter(r[3] for r in results)
    special = collections.Counter(r[2] for r in results if r[2])
    print(f"\nnode tests (onnx {onnx.__version__}): {len(results)} folders in {elapsed:.0f} s")
    nfrozen = sum(1 for r in results if r[3] == "pass" and r[4])
    for k in ("pass", "unsupported", "disputed", "wrong", "run-error", "crash"):
        print(f"  {k:12} {counts[k]}" + (f" ({nfrozen} with inputs frozen)" if k == "pass" else ""))
    print("  using sequences/optionals/strings/training: " + ", ".join(f"{k} {v}" for k, v in sorted(special.items())))
    if args.doc:
        write_doc(args.doc, results, elapsed)
    if args.write_passes:
        with open(args.write_passes, "w") as f:
            f.writelines(r[0] + "\n" for r in results if r[3] == "pass")
    bugs = sum(counts[k] for k in BUGS)
    print(f"{counts['pass']} passed, {bugs} failed, {counts['unsupported']} skipped")
    ok = bugs == 0 and counts["pass"] >= args.min_pass
    if counts["pass"] < args.min_pass:
        print(f"pass count {counts['pass']} is below the floor {args.min_pass}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
