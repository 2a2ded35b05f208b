#!/usr/bin/env python3
"""Compares a kiln-prune output with its input (lit helper).

usage: check_pruned.py IN.onnx OUT.onnx RATE BRxBC NODE=RATE...
Prints one line per initializer ('same', or its zero fraction and whether
its zeros form BCR blocks of BR x BC in W = the layer's y = W x matrix)
and 'metadata same' when everything but initializer values is unchanged.
NODE=RATE pairs name the pruned layers and the rate each should reach.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper as nh


def bcr_exact(W, br, bc):
    """Every br x bc block's non-zeros fill (rows with any) x (cols with any)."""
    nz = W != 0
    for i in range(0, W.shape[0], br):
        for j in range(0, W.shape[1], bc):
            b = nz[i:i + br, j:j + bc]
            if b.sum() != b.any(1).sum() * b.any(0).sum():
                return False
    return True


def main():
    src, dst, br_bc = onnx.load(sys.argv[1]), onnx.load(sys.argv[2]), sys.argv[4]
    br, bc = map(int, br_bc.split("x"))
    rates = dict(a.split("=") for a in sys.argv[5:])
    a = {t.name: nh.to_array(t) for t in src.graph.initializer}
    b = {t.name: nh.to_array(t) for t in dst.graph.initializer}
    users = {n.input[1]: n for n in src.graph.node if len(n.input) > 1}
    for name in sorted(a):
        if np.array_equal(a[name], b[name]):
            print(f"{name}: same")
            continue
        n = users[name]
        W = b[name].reshape(b[name].shape[0], -1)
        if n.op_type == "MatMul" or (n.op_type == "Gemm" and not any(x.name == "transB" and x.i for x in n.attribute)):
            W = W.T
        kept = b[name] != 0
        unchanged = np.array_equal(b[name][kept], a[name][kept])
        s = 1 - kept.mean()
        want = float(rates.get(n.name, sys.argv[3]))
        print(f"{name}: sparsity {'>=' if s >= want - 1e-9 else '<'} {want} bcr {bcr_exact(W, br, bc)} "
              f"kept values {'unchanged' if unchanged else 'CHANGED'}")
    for t in list(src.graph.initializer) + list(dst.graph.initializer):
        t.ClearField("raw_data")
        t.ClearField("float_data")
    print("metadata", "same" if src.SerializeToString() == dst.SerializeToString() else "DIFFERENT")


if __name__ == "__main__":
    main()
