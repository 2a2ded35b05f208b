#!/usr/bin/env python3
"""Generates the end-to-end test models with ONNX Runtime reference outputs.

Each case is written in the ONNX backend-test layout:
    OUT/<case>/model.onnx
    OUT/<case>/test_data_set_0/input_N.pb, output_N.pb   (outputs from ONNX Runtime)

Cases: one small model per operator form of the foundation's op set (built
with the onnx helper), and torchvision ResNet-50 / MobileNetV2 with random
weights exported by Debian's torch (--torch). Deterministic: fixed seeds.

usage: gen_models.py OUT [--torch] [--only NAME,...]
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

RNG = np.random.default_rng(1234)


def rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(
        nodes, "g",
        [h.make_tensor_value_info(n, T.FLOAT, a.shape) for n, a in inputs],
        [h.make_tensor_value_info(n, T.FLOAT, None) for n in outputs],
        list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)]), dict(inputs)


def single(op, shapes, attrs=None, inits=(), opset=17, extra_inputs=(), lo=-1.0, hi=1.0):
    ins = [(f"x{i}", rand(*s, lo=lo, hi=hi)) for i, s in enumerate(shapes)]
    names = [n for n, _ in ins] + list(extra_inputs)
    node = h.make_node(op, names, ["y"], name=f"{op.lower()}_node", **(attrs or {}))
    return model([node], ins, ["y"], inits, opset)


def cases():
    c = {}
    # Elementwise unary.
    for op in ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Erf", "HardSwish"]:
        c[f"unary_{op.lower()}"] = single(op, [(2, 3, 4, 5)])
    c["unary_sqrt"] = single("Sqrt", [(2, 3, 4)], lo=0.1, hi=4.0)
    c["unary_log"] = single("Log", [(2, 3, 4)], lo=0.1, hi=4.0)
    c["unary_reciprocal"] = single("Reciprocal", [(2, 3, 4)], lo=0.5, hi=2.0)
    c["leaky_relu"] = single("LeakyRelu", [(2, 3, 4)], {"alpha": 0.2})
    c["hard_sigmoid"] = single("HardSigmoid", [(2, 3, 4)], {"alpha": 0.3, "beta": 0.4}, lo=-4, hi=4)
    c["clip_inputs"] = single("Clip", [(3, 4)], inits=[init("lo", np.float32(-0.3)), init("hi", np.float32(0.5))],
                              extra_inputs=["lo", "hi"])
    c["clip_opset6"] = single("Clip", [(3, 4)], {"min": -0.2, "max": 0.1}, opset=6 + 1)
    # Binary with broadcasting.
    for op in ["Add", "Sub", "Mul", "Div"]:
        c[f"binary_{op.lower()}_bcast"] = single(op, [(2, 3, 4, 5), (3, 1, 5)])
    c["binary_pow"] = single("Pow", [(2, 3), (2, 3)], lo=0.5, hi=2.0)
    c["prelu"] = single("PRelu", [(1, 4, 3, 3)], inits=[init("s", rand(4, 1, 1))], extra_inputs=["s"])
    # Contractions.
    c["conv_basic"] = single("Conv", [(1, 3, 9, 9)], {"pads": [1, 1, 1, 1]},
                             inits=[init("w", rand(8, 3, 3, 3)), init("b", rand(8))], extra_inputs=["w", "b"])
    c["conv_strided_dilated"] = single("Conv", [(2, 4, 11, 10)],
                                       {"strides": [2, 2], "dilations": [2, 1], "pads": [2, 1, 0, 1]},
                                       inits=[init("w", rand(6, 4, 3, 3))], extra_inputs=["w"])
    c["conv_depthwise"] = single("Conv", [(1, 8, 10, 10)], {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]},
                                 inits=[init("w", rand(8, 1, 3, 3)), init("b", rand(8))], extra_inputs=["w", "b"])
    c["conv_grouped"] = single("Conv", [(1, 8, 7, 7)], {"group": 2},
                               inits=[init("w", rand(6, 4, 3, 3))], extra_inputs=["w"])
    c["conv_same_upper"] = single("Conv", [(1, 3, 8, 8)], {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                                  inits=[init("w", rand(4, 3, 3, 3))], extra_inputs=["w"])
    c["conv_1d"] = single("Conv", [(1, 3, 16)], {"pads": [2, 2]},
                          inits=[init("w", rand(5, 3, 5))], extra_inputs=["w"])
    c["conv_1x1"] = single("Conv", [(1, 16, 6, 6)], inits=[init("w", rand(32, 16, 1, 1))], extra_inputs=["w"])
    c["conv_transpose"] = single("ConvTranspose", [(1, 4, 5, 5)], {"strides": [2, 2], "pads": [1, 1, 1, 1]},
                                 inits=[init("w", rand(4, 3, 3, 3)), init("b", rand(3))], extra_inputs=["w", "b"])
    c["gemm_trans"] = single("Gemm", [(5, 7)], {"transB": 1, "alpha": 0.5, "beta": 2.0},
                             inits=[init("b", rand(9, 7)), init("c", rand(9))], extra_inputs=["b", "c"])
    c["gemm_transA"] = single("Gemm", [(7, 5)], {"transA": 1}, inits=[init("b", rand(7, 3))], extra_inputs=["b"])
    c["matmul_2d"] = single("MatMul", [(33, 20), (20, 17)])
    c["matmul_batched_bcast"] = single("MatMul", [(2, 3, 4, 6), (6, 5)])
    c["matmul_batched"] = single("MatMul", [(2, 3, 4, 6), (2, 3, 6, 5)])
    c["matmul_bcast_batch"] = single("MatMul", [(2, 1, 4, 6), (3, 6, 5)])
    c["matmul_vec"] = single("MatMul", [(6,), (2, 6, 5)])
    # Pooling and normalisation.
    c["maxpool"] = single("MaxPool", [(1, 3, 9, 9)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    c["maxpool_ceil"] = single("MaxPool", [(1, 2, 8, 8)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})
    c["avgpool_pad_excl"] = single("AveragePool", [(1, 3, 7, 7)],
                                   {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    c["avgpool_pad_incl"] = single("AveragePool", [(1, 3, 7, 7)],
                                   {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1})
    c["global_avgpool"] = single("GlobalAveragePool", [(2, 5, 4, 3)])
    c["global_maxpool"] = single("GlobalMaxPool", [(2, 5, 4, 3)])
    c["batchnorm_const"] = single("BatchNormalization", [(2, 4, 3, 3)],
                                  {"epsilon": 1e-3},
                                  inits=[init("s", rand(4)), init("b", rand(4)), init("m", rand(4)),
                                         init("v", rand(4, lo=0.5, hi=2.0))],
                                  extra_inputs=["s", "b", "m", "v"])
    c["softmax_last"] = single("Softmax", [(3, 4, 10)])
    c["softmax_axis1"] = single("Softmax", [(3, 4, 5)], {"axis": 1})
    c["softmax_opset11"] = single("Softmax", [(3, 4, 5)], {"axis": 1}, opset=11)
    c["reduce_mean"] = single("ReduceMean", [(2, 3, 4)], {"axes": [1], "keepdims": 0})
    c["reduce_max_keep"] = single("ReduceMax", [(2, 3, 4)], {"axes": [-1]})
    c["reduce_sum_input"] = single("ReduceSum", [(2, 3, 4)], inits=[init("ax", np.array([0, 2], np.int64))],
                                   extra_inputs=["ax"])
    # Data movement.
    c["concat"] = model([h.make_node("Concat", ["a", "b", "c"], ["y"], axis=1, name="cat")],
                        [("a", rand(2, 3, 4)), ("b", rand(2, 1, 4)), ("c", rand(2, 2, 4))], ["y"])
    c["transpose"] = single("Transpose", [(2, 3, 4, 5)], {"perm": [0, 2, 3, 1]})
    c["reshape"] = single("Reshape", [(2, 3, 4)], inits=[init("s", np.array([4, 0, -1], np.int64))],
                          extra_inputs=["s"])
    c["flatten"] = single("Flatten", [(2, 3, 4, 5)], {"axis": 2})
    c["squeeze_unsqueeze"] = model(
        [h.make_node("Squeeze", ["x", "ax"], ["s"], name="sq"),
         h.make_node("Unsqueeze", ["s", "ax2"], ["y"], name="unsq")],
        [("x", rand(2, 1, 3, 1))], ["y"],
        [init("ax", np.array([1, 3], np.int64)), init("ax2", np.array([0, -1], np.int64))])
    c["slice_steps"] = single("Slice", [(6, 8, 5)],
                              inits=[init("st", np.array([1, -1], np.int64)), init("en", np.array([6, 0], np.int64)),
                                     init("ax", np.array([0, 1], np.int64)), init("sp", np.array([2, -2], np.int64))],
                              extra_inputs=["st", "en", "ax", "sp"])
    c["pad_constant"] = single("Pad", [(2, 3, 4)],
                               inits=[init("p", np.array([0, 1, 2, 0, 2, 1], np.int64)), init("v", np.float32(0.5))],
                               extra_inputs=["p", "v"])
    c["pad_reflect"] = single("Pad", [(1, 2, 4, 5)], {"mode": "reflect"},
                              inits=[init("p", np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64))], extra_inputs=["p"])
    c["pad_edge"] = single("Pad", [(1, 2, 4, 5)], {"mode": "edge"},
                           inits=[init("p", np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64))], extra_inputs=["p"])
    # Shape arithmetic folded at compile time (as PyTorch exports it).
    c["shape_chain_reshape"] = model(
        [h.make_node("Shape", ["x"], ["s"], name="shape"),
         h.make_node("Gather", ["s", "i0"], ["d0"], axis=0, name="gather"),
         h.make_node("Unsqueeze", ["d0", "ax"], ["d0u"], name="unsq"),
         h.make_node("Concat", ["d0u", "m1"], ["ns"], axis=0, name="cat"),
         h.make_node("Reshape", ["x", "ns"], ["r"], name="reshape"),
         h.make_node("Identity", ["r"], ["i"], name="ident"),
         h.make_node("Dropout", ["i"], ["y"], name="drop")],
        [("x", rand(3, 4, 5))], ["y"],
        [init("i0", np.array(0, np.int64)), init("ax", np.array([0], np.int64)),
         init("m1", np.array([-1], np.int64))])
    c["constant_node"] = model(
        [h.make_node("Constant", [], ["k"], name="k", value=nh.from_array(rand(3, 4), "kv")),
         h.make_node("Add", ["x", "k"], ["y"], name="add")], [("x", rand(2, 3, 4))], ["y"])
    c["multi_output"] = model(
        [h.make_node("Relu", ["x"], ["a"], name="r"), h.make_node("Sigmoid", ["x"], ["b"], name="s"),
         h.make_node("Add", ["a", "b"], ["c"], name="add")], [("x", rand(2, 6))], ["a", "c", "x_out"]
        if False else ["a", "c"])
    # Resampling, scatter/gather and selection ops (session 2).
    c["resize_linear"] = single("Resize", [(1, 2, 4, 5)], {"mode": "linear"},
                                inits=[init("sc", np.array([1, 1, 1.5, 2.0], np.float32))], extra_inputs=["", "sc"])
    c["resize_cubic_align"] = single("Resize", [(1, 2, 4, 4)], {"mode": "cubic", "coordinate_transformation_mode": "align_corners"},
                                     inits=[init("sz", np.array([1, 2, 7, 3], np.int64))], extra_inputs=["", "", "sz"])
    c["grid_sample"] = single("GridSample", [(1, 2, 4, 5), (1, 3, 6, 2)], {"align_corners": 0}, lo=-1.2, hi=1.2)
    c["cumsum_reverse"] = single("CumSum", [(3, 5)], {"reverse": 1, "exclusive": 1},
                                 inits=[init("ax", np.array(1, np.int64))], extra_inputs=["ax"])
    c["einsum_bmm"] = model([h.make_node("Einsum", ["a", "b"], ["y"], name="einsum", equation="bij,bjk->bik")],
                            [("a", rand(2, 3, 4)), ("b", rand(2, 4, 5))], ["y"])
    c["gather_elements"] = single("GatherElements", [(3, 4)], {"axis": 1},
                                  inits=[init("ix", np.array([[0, 3], [-1, 2], [1, 1]], np.int64))], extra_inputs=["ix"])
    c["scatter_nd_add"] = single("ScatterND", [(4, 3)], {"reduction": "add"},
                                 inits=[init("ix", np.array([[1], [3], [1]], np.int64)), init("up", rand(3, 3))],
                                 extra_inputs=["ix", "up"], opset=18)
    c["topk_values"] = model([h.make_node("TopK", ["x", "k"], ["y", "i"], name="topk", axis=1)],
                             [("x", rand(3, 10))], ["y"], [init("k", np.array([4], np.int64))])
    c["lppool_2d"] = single("LpPool", [(1, 2, 5, 5)], {"kernel_shape": [3, 3], "p": 2, "pads": [1, 1, 1, 1]})
    c["maxpool_3d"] = single("MaxPool", [(1, 2, 4, 5, 6)], {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2]})
    c["avgpool_3d"] = single("AveragePool", [(1, 2, 4, 5, 6)], {"kernel_shape": [2, 2, 3], "pads": [1, 0, 1, 0, 1, 1]})
    # A small CNN: the example model shipped in examples/.
    c["small_cnn"] = small_cnn()
    # Residuals added by 1x1 convs (kiln writes the output into the
    # residual's buffer where the residual dies): one over its own residual
    # (which must not be overwritten while the conv reads it), one whose
    # residual dies there.
    c["conv_residual_in_place"] = model([
        h.make_node("Relu", ["x"], ["r"], name="relu0"),
        h.make_node("Conv", ["r", "w1", "b1"], ["c1"], name="conv_self"),
        h.make_node("Add", ["c1", "r"], ["s1"], name="add_self"),
        h.make_node("Relu", ["s1"], ["a"], name="relu1"),
        h.make_node("Conv", ["a", "w2"], ["u"], name="conv3x3", pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["u", "w3", "b3"], ["c3"], name="conv_res"),
        h.make_node("Add", ["c3", "a"], ["s3"], name="add_res"),
        h.make_node("Relu", ["s3"], ["b"], name="relu3"),
        h.make_node("MaxPool", ["b"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ], [("x", rand(1, 16, 14, 14))], ["y"],
        [init("w1", rand(16, 16, 1, 1)), init("b1", rand(16)), init("w2", rand(8, 16, 3, 3)),
         init("w3", rand(16, 8, 1, 1)), init("b3", rand(16))])
    return c


def small_cnn():
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1"),
        h.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="dw2", pads=[1, 1, 1, 1], group=16),
        h.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        h.make_node("Add", ["r2", "r1"], ["a"], name="residual"),
        h.make_node("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
        h.make_node("Softmax", ["logits"], ["y"], name="softmax"),
    ]
    inits = [init("w1", rand(16, 3, 3, 3)), init("b1", rand(16)), init("s", rand(16)), init("bb", rand(16)),
             init("m", rand(16)), init("v", rand(16, lo=0.5, hi=1.5)), init("w2", rand(16, 1, 3, 3)),
             init("lo", np.float32(0.0)), init("hi", np.float32(6.0)), init("wf", rand(10, 16, lo=-0.05, hi=0.05)), init("bf", rand(10, lo=-0.1, hi=0.1))]
    return model(nodes, [("x", rand(1, 3, 32, 32))], ["y"], inits, opset=13)


def torch_models():
    import torch
    import torchvision
    torch.manual_seed(0)
    out = {}
    for name, ctor, size in [("resnet50", torchvision.models.resnet50, 224),
                             ("mobilenet_v2", torchvision.models.mobilenet_v2, 224)]:
        net = ctor(weights=None).eval()
        # Default init gives near-zero logits (e.g. ~1e-10 for MobileNetV2),
        # which would make the comparison vacuous: randomise BN statistics and
        # affine parameters so activations stay O(1).
        with torch.no_grad():
            for mod in net.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.1, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.1, 0.1)
        x = torch.rand(1, 3, size, size) * 2 - 1
        out[name] = (net, x)
    return out


def transformer_models():
    """BERT-base-shaped encoder and GPT-2-small-shaped causal decoder, built
    from torch.nn.TransformerEncoder (random weights), sequence length 128."""
    import torch
    torch.manual_seed(0)

    class Transformer(torch.nn.Module):
        def __init__(self, vocab, layers, causal):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, 768)
            self.pos = torch.nn.Parameter(torch.randn(1, 128, 768) * 0.02)
            self.norm = torch.nn.LayerNorm(768)
            layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu",
                                                     batch_first=True, norm_first=causal)
            self.enc = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            mask = torch.triu(torch.full((128, 128), float("-inf")), diagonal=1) if causal else None
            self.register_buffer("mask", mask)

        def forward(self, ids):
            return self.enc(self.norm(self.emb(ids) + self.pos), mask=self.mask)

    out = {}
    for name, vocab, causal in [("bert_base", 30522, False), ("gpt2_decoder", 50257, True)]:
        net = Transformer(vocab, 12, causal).eval()
        # TransformerEncoder deep-copies one layer: perturb every parameter so
        # the 12 layers differ (the exporter would otherwise share them).
        with torch.no_grad():
            for p in net.enc.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        ids = torch.randint(0, vocab, (1, 128))
        out[name] = (net, ids)
    return out


def write_case(out_dir, name, m, inputs):
    import onnxruntime as ort
    d = os.path.join(out_dir, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    path = os.path.join(d, "model.onnx")
    onnx.save(m, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in sess.get_inputs()}
    outs = sess.run(None, feeds)
    for o in outs:
        if o.size > 1 and float(np.std(o)) < 1e-2:
            sys.exit(f"{name}: reference output is degenerate (std {np.std(o):.3g}); the test would be vacuous")
    for i, inp in enumerate(sess.get_inputs()):
        with open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb") as f:
            f.write(nh.from_array(feeds[inp.name], inp.name).SerializeToString())
    for i, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        with open(os.path.join(d, "test_data_set_0", f"output_{i}.pb"), "wb") as f:
            f.write(nh.from_array(v, o.name).SerializeToString())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--torch", action="store_true", help="also export torchvision ResNet-50 and MobileNetV2")
    ap.add_argument("--transformers", action="store_true",
                    help="also export the BERT-base encoder and GPT-2-shaped decoder")
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    os.makedirs(args.out, exist_ok=True)
    for name, (m, inputs) in cases().items():
        if not only or name in only:
            write_case(args.out, name, m, inputs)
    if args.torch:
        import torch
        for name, (net, x) in torch_models().items():
            if only and name not in only:
                continue
            path = os.path.join(args.out, name + ".tmp.onnx")
            torch.onnx.export(net, x, path, opset_version=17, input_names=["input"], output_names=["logits"],
                              do_constant_folding=True)
            m = onnx.load(path)
            os.remove(path)
            write_case(args.out, name, m, {"input": x.numpy()})
            print(f"exported {name}", file=sys.stderr)
    if args.transformers:
        import torch
        for name, (net, ids) in transformer_models().items():
            if only and name not in only:
                continue
            path = os.path.join(args.out, name + ".tmp.onnx")
            torch.onnx.export(net, ids, path, opset_version=17, input_names=["input_ids"],
                              output_names=["hidden"], do_constant_folding=True)
            m = onnx.load(path)
            os.remove(path)
            write_case(args.out, name, m, {"input_ids": ids.numpy()})
            print(f"exported {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
