#!/usr/bin/env python3
"""Writes one small ONNX model (valid or deliberately broken) for lit tests.

usage: make_onnx.py CASE OUT.onnx
       make_onnx.py --all DIR     (every single-file case, e.g. fuzzer seeds)
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def vi(name, shape, dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, shape)


def graph(nodes, inputs, outputs, inits=(), opset=17, name="g"):
    g = h.make_graph(nodes, name, inputs, outputs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def w(name, shape, value=0.5):
    return nh.from_array(np.full(shape, value, np.float32), name)


def i64(name, vals):
    return nh.from_array(np.array(vals, np.int64), name)


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def conv_same_upper():
    return graph([h.make_node("Conv", ["x", "w"], ["y"], name="conv1", auto_pad="SAME_UPPER", strides=[2, 2])],
                 [vi("x", [1, 3, 8, 8])], [vi("y", None)], [w("w", [4, 3, 3, 3])])


@case
def conv_chain():
    # conv1 -> relu1 -> conv2 -> add(relu1) -> relu2: two fusion blocks.
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             h.make_node("Add", ["c2", "r1"], ["a"], name="add"),
             h.make_node("Relu", ["a"], ["y"], name="relu2")]
    return graph(nodes, [vi("x", [1, 4, 8, 8])], [vi("y", None)],
                 [w("w1", [4, 4, 3, 3]), w("w2", [4, 4, 3, 3], 0.25)])


def winograd_chain(scale):
    # conv3x3 (16 channels, Winograd) -> relu -> conv1x1 -> add(x) -> relu,
    # 16x16 pixels: a conv chain; `scale` sets the weights' values only.
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], name="conv3x3", pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv1x1"),
             h.make_node("Add", ["c2", "x"], ["a"], name="add"),
             h.make_node("Relu", ["a"], ["y"], name="relu2")]
    return graph(nodes, [vi("x", [1, 16, 16, 16])], [vi("y", None)],
                 [w("w1", [16, 16, 3, 3], 0.01 * scale), w("w2", [16, 16, 1, 1], 0.02 * scale)])


@case
def conv_chain_a():
    return winograd_chain(1.0)


@case
def conv_chain_b():
    return winograd_chain(2.0)


@case
def matmul_transpose():
    # MatMul -> Transpose(1,0,2) -> Reshape: a "profile" cell of the fusion table.
    nodes = [h.make_node("MatMul", ["a", "b"], ["m"], name="matmul"),
             h.make_node("Transpose", ["m"], ["t"], name="transpose", perm=[1, 0, 2]),
             h.make_node("Reshape", ["t", "shape"], ["y"], name="reshape")]
    return graph(nodes, [vi("a", [4, 32, 64])], [vi("y", None)],
                 [w("b", [4, 64, 48]), i64("shape", [32, 192])])


@case
def shape_chain():
    nodes = [h.make_node("Shape", ["x"], ["s"], name="shape"),
             h.make_node("Gather", ["s", "zero"], ["d0"], name="gather", axis=0),
             h.make_node("Unsqueeze", ["d0", "ax"], ["d0u"], name="unsqueeze"),
             h.make_node("Concat", ["d0u", "minus1"], ["newshape"], name="concat", axis=0),
             h.make_node("Reshape", ["x", "newshape"], ["y"], name="reshape")]
    return graph(nodes, [vi("x", [2, 3, 4])], [vi("y", None)],
                 [i64("zero", 0), i64("ax", [0]), i64("minus1", [-1])])


@case
def clip_opset6():
    return graph([h.make_node("Clip", ["x"], ["y"], name="clip", min=-1.0, max=2.0)],
                 [vi("x", [4])], [vi("y", None)], opset=6 + 1)


@case
def clip_opset13():
    return graph([h.make_node("Clip", ["x", "lo", ""], ["y"], name="clip")],
                 [vi("x", [4])], [vi("y", None)], [nh.from_array(np.float32(0.0), "lo")], opset=13)


@case
def softmax_opset11():
    return graph([h.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)],
                 [vi("x", [2, 3, 4])], [vi("y", None)], opset=11)


@case
def matmul_vec():
    return graph([h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                 [vi("x", [5])], [vi("y", None)], [w("w", [2, 5, 3])])


@case
def symbolic_batch():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu")],
                 [vi("x", ["batch", 3])], [vi("y", None)])


# ---- malformed or unsupported models ------------------------------------

@case
def unsupported_ops():
    nodes = [h.make_node("Relu", ["x"], ["a"], name="ok"),
             h.make_node("NonMaxSuppression", ["a"], ["b"], name="nms"),
             h.make_node("Relu", ["b"], ["c"], name="ok2"),
             h.make_node("StringNormalizer", ["c"], ["y"], name="strnorm")]
    return graph(nodes, [vi("x", [4])], [vi("y", None)])


@case
def unknown_domain():
    return graph([h.make_node("FancyOp", ["x"], ["y"], name="fancy", domain="com.example")],
                 [vi("x", [4])], [vi("y", None)])


@case
def empty_graph():
    return graph([], [], [])


@case
def undefined_input():
    return graph([h.make_node("Add", ["x", "ghost"], ["y"], name="add1")],
                 [vi("x", [4])], [vi("y", None)])


@case
def cycle():
    return graph([h.make_node("Add", ["x", "b"], ["a"], name="n1"),
                  h.make_node("Relu", ["a"], ["b"], name="n2")],
                 [vi("x", [4])], [vi("b", None)])


@case
def duplicate_output():
    return graph([h.make_node("Relu", ["x"], ["a"], name="first"),
                  h.make_node("Sigmoid", ["x"], ["a"], name="second")],
                 [vi("x", [4])], [vi("a", None)])


@case
def bad_group():
    return graph([h.make_node("Conv", ["x", "w"], ["y"], name="conv_g", group=3)],
                 [vi("x", [1, 4, 8, 8])], [vi("y", None)], [w("w", [6, 1, 3, 3])])


@case
def negative_pads():
    return graph([h.make_node("Conv", ["x", "w"], ["y"], name="conv_p", pads=[-1, 0, 0, 0])],
                 [vi("x", [1, 3, 8, 8])], [vi("y", None)], [w("w", [4, 3, 3, 3])])


@case
def zero_stride():
    return graph([h.make_node("MaxPool", ["x"], ["y"], name="pool0", kernel_shape=[2, 2], strides=[0, 1])],
                 [vi("x", [1, 3, 8, 8])], [vi("y", None)])


@case
def no_broadcast():
    return graph([h.make_node("Add", ["x", "w"], ["y"], name="add_bad")],
                 [vi("x", [2, 3])], [vi("y", None)], [w("w", [4])])


@case
def axis_out_of_range():
    return graph([h.make_node("Softmax", ["x"], ["y"], name="sm_axis", axis=3)],
                 [vi("x", [2, 3])], [vi("y", None)])


@case
def opset_too_new():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [4])], [vi("y", None)], opset=99)


@case
def initializer_size_mismatch():
    t = nh.from_array(np.zeros(6, np.float32), "w")
    del t.dims[:]
    t.dims.extend([2, 4])
    return graph([h.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", [2, 4])], [vi("y", None)], [t])


@case
def external_data():
    t = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[4])
    t.data_location = T.EXTERNAL
    t.external_data.add(key="location", value="missing_weights.bin")
    return graph([h.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", [4])], [vi("y", None)], [t])


@case
def prunable():
    # Three prunable layers (a 3x3 conv, a Gemm with transB, a MatMul; batch 2
    # so the last two are GEMMs, not vector products) and
    # one that must stay dense (depthwise), with metadata and an opset
    # import besides the default: kiln-prune must keep all of it.
    rng = np.random.default_rng(7)
    r = lambda *s: nh.from_array(rng.uniform(-1, 1, s).astype(np.float32), None)
    def named(t, name):
        t.name = name
        return t
    nodes = [
        h.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["c", "dw"], ["d"], name="depthwise", group=16, pads=[1, 1, 1, 1]),
        h.make_node("Flatten", ["d"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "gw", "gb"], ["g"], name="fc", transB=1),
        h.make_node("MatMul", ["g", "mw"], ["y"], name="proj"),
    ]
    inits = [named(r(16, 8, 3, 3), "cw"), named(r(16), "cb"), named(r(16, 1, 3, 3), "dw"),
             named(r(32, 16 * 4 * 4), "gw"), named(r(32), "gb"), named(r(32, 24), "mw")]
    m = graph(nodes, [vi("x", [2, 8, 4, 4])], [vi("y", None)], inits)
    m.opset_import.append(h.make_opsetid("ai.onnx.ml", 3))
    h.set_model_props(m, {"author": "kiln lit", "license": "none"})
    m.producer_name = "make_onnx"
    return m


@case
def int_input():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [4], T.COMPLEX64)], [vi("y", None)])


@case
def reshape_bad():
    return graph([h.make_node("Reshape", ["x", "s"], ["y"], name="reshape_bad")],
                 [vi("x", [2, 3])], [vi("y", None)], [i64("s", [4, -1, 5])])


@case
def shape_not_constant():
    return graph([h.make_node("Reshape", ["x", "s"], ["y"], name="reshape_dyn")],
                 [vi("x", [2, 3]), vi("s", [2])], [vi("y", None)])


@case
def wrong_attr_type():
    return graph([h.make_node("Softmax", ["x"], ["y"], name="sm_attr", axis=1.5)],
                 [vi("x", [2, 3])], [vi("y", None)])


@case
def external_data_escape():
    t = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[4])
    t.data_location = T.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    return graph([h.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", [4])], [vi("y", None)], [t])


@case
def external_data_short():
    t = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[4])
    t.data_location = T.EXTERNAL
    t.external_data.add(key="location", value="short_weights.bin")
    t.external_data.add(key="offset", value="8")
    t.external_data.add(key="length", value="16")
    return graph([h.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", [4])], [vi("y", None)], [t])


@case
def dims_overflow():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu_big")],
                 [vi("x", [1 << 40, 1 << 40])], [vi("y", None)])


@case
def too_large():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu_huge")],
                 [vi("x", [1 << 20, 1 << 20])], [vi("y", None)])


@case
def expand_too_large():
    return graph([h.make_node("Expand", ["x", "s"], ["y"], name="expand_huge")],
                 [vi("x", [1])], [vi("y", None)], [i64("s", [1 << 31, 1 << 20])])


@case
def constant_of_shape_huge():
    return graph([h.make_node("ConstantOfShape", ["s"], ["c"], name="cos_huge",
                              value=nh.from_array(np.array([1], np.int64))),
                  h.make_node("Cast", ["c"], ["y"], name="cast", to=T.FLOAT)],
                 [], [vi("y", None)], [i64("s", [1 << 40])])


@case
def conv_missing_weight():
    return graph([h.make_node("Conv", ["x"], ["y"], name="conv_1in")],
                 [vi("x", [1, 3, 8, 8])], [vi("y", None)])


@case
def gemm_mismatch():
    return graph([h.make_node("Gemm", ["x", "w"], ["y"], name="gemm_k")],
                 [vi("x", [2, 5])], [vi("y", None)], [w("w", [4, 3])])


@case
def bad_perm():
    return graph([h.make_node("Transpose", ["x"], ["y"], name="tr", perm=[0, 0, 1])],
                 [vi("x", [2, 3, 4])], [vi("y", None)])


@case
def concat_rank_mismatch():
    return graph([h.make_node("Concat", ["x", "w"], ["y"], name="cat", axis=0)],
                 [vi("x", [2, 3])], [vi("y", None)], [w("w", [2, 3, 1])])


@case
def negative_dim_initializer():
    t = nh.from_array(np.zeros(4, np.float32), "w")
    del t.dims[:]
    t.dims.extend([-4])
    return graph([h.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", [4])], [vi("y", None)], [t])


@case
def output_not_produced():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [4])], [vi("y", None), vi("z", None)])


@case
def gather_index_out_of_range():
    return graph([h.make_node("Gather", ["x", "i"], ["y"], name="gather_oob", axis=0)],
                 [vi("x", [3, 4])], [vi("y", None)], [i64("i", [0, 7])])


@case
def string_initializer():
    t = h.make_tensor("s", T.STRING, [1], [b"hello"])
    return graph([h.make_node("Identity", ["s"], ["y"], name="id_str")], [], [vi("y", None)], [t])


@case
def sequence_input():
    seq = h.make_tensor_sequence_value_info("x", T.FLOAT, [4])
    return graph([h.make_node("SequenceLength", ["x"], ["y"], name="seqlen")], [seq], [vi("y", None)])


@case
def kernel_too_large():
    return graph([h.make_node("Conv", ["x", "w"], ["y"], name="conv_big_k")],
                 [vi("x", [1, 3, 4, 4])], [vi("y", None)], [w("w", [4, 3, 7, 7])])


@case
def cast_without_to():
    return graph([h.make_node("Cast", ["x"], ["y"], name="cast_noto")], [vi("x", [4])], [vi("y", None)])


@case
def split_bad_sizes():
    return graph([h.make_node("Split", ["x", "s"], ["a", "b"], name="split_bad", axis=0)],
                 [vi("x", [6])], [vi("a", None), vi("b", None)], [i64("s", [2, 5])])


@case
def reshape_two_minus_one():
    return graph([h.make_node("Reshape", ["x", "s"], ["y"], name="reshape_2m1")],
                 [vi("x", [2, 3])], [vi("y", None)], [i64("s", [-1, -1])])


@case
def matmul_mismatch():
    return graph([h.make_node("MatMul", ["x", "w"], ["y"], name="mm_k")],
                 [vi("x", [2, 5])], [vi("y", None)], [w("w", [4, 3])])


@case
def no_ir_version_graph_only():
    m = graph([h.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [4])], [vi("y", None)])
    m.ClearField("graph")
    return m


@case
def legacy_opset_add():
    # Opset 5 Add had explicit broadcast attributes: refused.
    return graph([h.make_node("Add", ["x", "x"], ["y"], name="add_old")], [vi("x", [4])], [vi("y", None)], opset=5)


@case
def legacy_opset_relu():
    return graph([h.make_node("Relu", ["x"], ["y"], name="relu_old")], [vi("x", [4])], [vi("y", None)], opset=3)


@case
def matmul_tiled():
    # 256x128 times a constant 128x128: enough outputs for register tiles.
    wv = nh.from_array(((np.arange(128 * 128) % 7) * 0.25 - 0.75).astype(np.float32).reshape(128, 128), "w")
    return graph([h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", [256, 128])], [vi("y", None)],
                 [wv])


@case
def half_storage():
    # float16 in and out, a bfloat16 result: half storage on every target.
    nodes = [h.make_node("Add", ["x", "x"], ["y"], name="add_half"),
             h.make_node("Cast", ["x"], ["xf"], name="to_float", to=T.FLOAT),
             h.make_node("Cast", ["xf"], ["z"], name="to_bf16", to=T.BFLOAT16)]
    return graph(nodes, [vi("x", [8], T.FLOAT16)], [vi("y", None), vi("z", None)])


@case
def wrong_input_count():
    return graph([h.make_node("Relu", ["x", "x"], ["y"], name="relu2")], [vi("x", [4])], [vi("y", None)])


def main():
    name, out = sys.argv[1], sys.argv[2]
    if name == "--all":
        # Every single-file case into directory OUT (the fuzzer's seeds).
        import os
        os.makedirs(out, exist_ok=True)
        for case_name, fn in CASES.items():
            onnx.save(fn(), os.path.join(out, case_name + ".onnx"))
        return
    if name == "not_onnx":
        open(out, "wb").write(b"this is not an ONNX model\n" * 4)
        return
    if name == "relu_with_data":
        # A model plus input/expected output computed independently (numpy),
        # and a deliberately wrong expectation, in backend-test layout.
        import os
        onnx.save(graph([h.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [2, 3])], [vi("y", None)]),
                  os.path.join(out, "model.onnx"))
        x = np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 0.0]], np.float32)
        for d, y in [("good", np.maximum(x, 0)), ("wrong", np.maximum(x, 0) + np.float32(0.01)),
                     ("wrongdtype", np.maximum(x, 0).astype(np.float64))]:
            os.makedirs(os.path.join(out, d), exist_ok=True)
            open(os.path.join(out, d, "input_0.pb"), "wb").write(nh.from_array(x, "x").SerializeToString())
            open(os.path.join(out, d, "output_0.pb"), "wb").write(nh.from_array(y, "y").SerializeToString())
        return
    if name == "external_data_ok":
        # A Gemm whose weights live in a file beside the model, with input
        # and expected output computed by numpy.
        import os
        rng = np.random.default_rng(0)
        wt = rng.standard_normal((64, 32)).astype(np.float32)
        bias = rng.standard_normal(32).astype(np.float32)
        m = graph([h.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm_ext")], [vi("x", [2, 64])],
                  [vi("y", None)], [nh.from_array(wt, "w"), nh.from_array(bias, "b")])
        onnx.save(m, os.path.join(out, "model.onnx"), save_as_external_data=True,
                  location="weights.bin", size_threshold=0)
        x = rng.standard_normal((2, 64)).astype(np.float32)
        os.makedirs(os.path.join(out, "data"), exist_ok=True)
        open(os.path.join(out, "data", "input_0.pb"), "wb").write(nh.from_array(x, "x").SerializeToString())
        open(os.path.join(out, "data", "output_0.pb"), "wb").write(nh.from_array(x @ wt + bias, "y").SerializeToString())
        return
    if name == "corrupted":
        # A valid model with bytes overwritten in the middle.
        data = bytearray(CASES["conv_same_upper"]().SerializeToString())
        for i in range(4, 16):
            data[i] = 0xFF
        open(out, "wb").write(bytes(data))
        return
    if name == "truncated":
        data = CASES["conv_same_upper"]().SerializeToString()
        open(out, "wb").write(data[: len(data) // 2])
        return
    onnx.save(CASES[name](), out)


if __name__ == "__main__":
    main()
