// kiln-prune: magnitude-based BCR (block-based column-row) pruning of the
// Conv, Gemm and MatMul weights of an ONNX model. The output is an ordinary
// ONNX model whose pruned weights are exact zeros (any runtime runs it);
// everything else in the model (metadata, other initializers, opset
// imports, value infos) is kept as it was. Depthwise and grouped convs
// stay dense. The pruning itself is kiln::bcr::prune (kiln/bcr_layout.h).
//
// usage: kiln-prune in.onnx -o out.onnx --rate S [--block RxC]
//                   [--per-layer FILE] [--keep-dense first,last,NAME...]
#include "kiln/bcr_layout.h"

#include <onnx/onnx_pb.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

const char *kUsage =
    "usage: kiln-prune in.onnx -o out.onnx --rate S [--block RxC] [--per-layer FILE]\n"
    "                  [--keep-dense first,last,NAME...]\n"
    "  --rate S         fraction of each prunable weight to zero, 0 <= S < 1\n"
    "  --block RxC      BCR block: R rows (outputs) x C columns (inputs), default 4x16\n"
    "  --per-layer FILE lines 'NODE RATE' (or 'NODE dense') overriding --rate; # comments\n"
    "  --keep-dense L   comma-separated node names, or first/last (prunable layers in graph order)\n";

int fail(const std::string &msg) {
  std::fprintf(stderr, "kiln-prune: error: %s\n", msg.c_str());
  return 1;
}

/// A prunable layer: a node whose weight is a float initializer, seen as
/// W[rows, cols] (y = W x); `transposed` when the initializer holds W^T.
struct Layer {
  std::string node, op, init;
  int64_t rows = 0, cols = 0;
  bool transposed = false;
};

std::string nodeLabel(const onnx::NodeProto &n, int index) {
  return n.name().empty() ? n.op_type() + "#" + std::to_string(index) : n.name();
}

int64_t intAttr(const onnx::NodeProto &n, const char *name, int64_t dflt) {
  for (const auto &a : n.attribute())
    if (a.name() == name) return a.i();
  return dflt;
}

} // namespace

int main(int argc, char **argv) {
  std::string in, out, perLayerFile, keepDense;
  double rate = -1;
  int br = 4, bc = 16;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char *flag) -> const char * {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kiln-prune: error: %s needs a value\n%s", flag, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-o") out = value("-o");
    else if (a == "--rate") {
      const char *v = value("--rate");
      char *end = nullptr;
      rate = std::strtod(v, &end);
      if (*end || !(rate >= 0 && rate < 1)) return fail(std::string("--rate '") + v + "': expected 0 <= S < 1");
    } else if (a == "--block") {
      const char *v = value("--block");
      char tail = 0;
      if (std::sscanf(v, "%dx%d%c", &br, &bc, &tail) != 2 || br < 1 || bc < 1 || br > 64 || bc > 64)
        return fail(std::string("--block '") + v + "': expected RxC with R and C in 1..64");
    } else if (a == "--per-layer") perLayerFile = value("--per-layer");
    else if (a == "--keep-dense") keepDense = value("--keep-dense");
    else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "kiln-prune: error: unknown option '%s'\n%s", a.c_str(), kUsage);
      return 2;
    } else if (in.empty()) in = a;
    else return fail("more than one input model given");
  }
  if (in.empty() || out.empty() || rate < 0) {
    std::fputs(kUsage, stderr);
    return 2;
  }

  onnx::ModelProto model;
  {
    std::ifstream f(in, std::ios::binary);
    if (!f) return fail("cannot read '" + in + "'");
    if (!model.ParseFromIstream(&f)) return fail("'" + in + "' is not a valid ONNX model (protobuf parse failed)");
  }
  onnx::GraphProto *graph = model.mutable_graph();
  std::map<std::string, onnx::TensorProto *> inits;
  for (auto &t : *graph->mutable_initializer()) inits[t.name()] = &t;

  // Prunable layers in graph order; a weight shared by several nodes is
  // pruned once (as the first node sees it).
  std::vector<Layer> layers;
  std::set<std::string> seen;
  int problems = 0;
  for (int i = 0; i < graph->node_size(); ++i) {
    const onnx::NodeProto &n = graph->node(i);
    const std::string &op = n.op_type();
    if ((op != "Conv" && op != "Gemm" && op != "MatMul") || !n.domain().empty() || n.input_size() < 2) continue;
    auto it = inits.find(n.input(1));
    if (it == inits.end()) continue; // weights computed at run time: nothing to prune
    const onnx::TensorProto &w = *it->second;
    Layer l{nodeLabel(n, i), op, w.name()};
    if (w.data_type() != onnx::TensorProto::FLOAT) {
      std::fprintf(stderr, "kiln-prune: note: node '%s' (%s): weight '%s' is not float32; left dense\n",
                   l.node.c_str(), op.c_str(), w.name().c_str());
      continue;
    }
    if (w.data_location() == onnx::TensorProto::EXTERNAL) {
      std::fprintf(stderr, "kiln-prune: error: node '%s' (%s): weight '%s' uses external data, not supported\n",
                   l.node.c_str(), op.c_str(), w.name().c_str());
      ++problems;
      continue;
    }
    if (op == "Conv") {
      if (w.dims_size() < 3 || intAttr(n, "group", 1) != 1) continue; // grouped/depthwise: dense
      l.rows = w.dims(0);
      l.cols = 1;
      for (int d = 1; d < w.dims_size(); ++d) l.cols *= w.dims(d);
    } else {
      if (w.dims_size() != 2) continue;
      bool transB = op == "Gemm" && intAttr(n, "transB", 0) != 0;
      // W has one output feature per row: B^T, or B itself when transB.
      l.rows = transB ? w.dims(0) : w.dims(1);
      l.cols = transB ? w.dims(1) : w.dims(0);
      l.transposed = !transB;
    }
    if (l.rows * l.cols <= 0 || !seen.insert(l.init).second) continue;
    layers.push_back(l);
  }
  if (problems) return 1;
  if (layers.empty()) return fail("no prunable layer (Conv with group 1, Gemm or MatMul with a float initializer weight)");

  // Rates: the global one, then --keep-dense, then the per-layer file.
  std::map<std::string, double> rates;
  for (const Layer &l : layers) rates[l.node] = rate;
  auto known = [&](const std::string &name) { return rates.count(name) != 0; };
  if (!keepDense.empty()) {
    std::stringstream ss(keepDense);
    for (std::string item; std::getline(ss, item, ',');) {
      if (item == "first") rates[layers.front().node] = 0;
      else if (item == "last") rates[layers.back().node] = 0;
      else if (known(item)) rates[item] = 0;
      else return fail("--keep-dense: '" + item + "' is not a prunable layer (use kiln-prune's layer names)");
    }
  }
  if (!perLayerFile.empty()) {
    std::ifstream f(perLayerFile);
    if (!f) return fail("cannot read '" + perLayerFile + "'");
    std::string line;
    for (int lineNo = 1; std::getline(f, line); ++lineNo) {
      if (auto h = line.find('#'); h != std::string::npos) line.resize(h);
      std::stringstream ls(line);
      std::string name, value;
      if (!(ls >> name)) continue;
      std::string where = perLayerFile + ":" + std::to_string(lineNo);
      if (!(ls >> value)) return fail(where + ": expected 'NODE RATE'");
      if (!known(name)) return fail(where + ": '" + name + "' is not a prunable layer");
      char *end = nullptr;
      double r = value == "dense" ? 0 : std::strtod(value.c_str(), &end);
      if (value != "dense" && (*end || !(r >= 0 && r < 1))) return fail(where + ": rate '" + value + "' not in [0, 1)");
      rates[name] = r;
    }
  }

  std::printf("kiln-prune: %zu prunable layers, BCR %dx%d blocks\n", layers.size(), br, bc);
  std::printf("  %-40s %-6s %12s %8s %8s\n", "layer", "op", "W", "rate", "sparsity");
  int64_t total = 0, zeros = 0;
  for (const Layer &l : layers) {
    onnx::TensorProto &t = *inits[l.init];
    int64_t n = l.rows * l.cols;
    std::vector<float> data(n);
    if (t.has_raw_data()) {
      if ((int64_t)t.raw_data().size() != n * 4) return fail("weight '" + l.init + "' has the wrong byte size");
      std::memcpy(data.data(), t.raw_data().data(), n * 4);
    } else {
      if (t.float_data_size() != n) return fail("weight '" + l.init + "' has the wrong element count");
      std::copy(t.float_data().begin(), t.float_data().end(), data.begin());
    }
    std::vector<float> W(n);
    auto toW = [&](bool back) { // data (as stored) <-> W[rows, cols]
      for (int64_t r = 0; r < l.rows; ++r)
        for (int64_t c = 0; c < l.cols; ++c) {
          int64_t s = l.transposed ? c * l.rows + r : r * l.cols + c;
          if (back) data[s] = W[r * l.cols + c];
          else W[r * l.cols + c] = data[s];
        }
    };
    toW(false);
    double r = rates[l.node];
    if (r > 0) kiln::bcr::prune(W.data(), l.rows, l.cols, br, bc, r);
    toW(true);
    if (t.has_raw_data()) t.set_raw_data(std::string((const char *)data.data(), n * 4));
    else
      for (int64_t i = 0; i < n; ++i) t.set_float_data((int)i, data[i]);
    int64_t z = n - kiln::bcr::nonZeros(W.data(), n);
    total += n, zeros += z;
    std::string shape = std::to_string(l.rows) + "x" + std::to_string(l.cols);
    std::printf("  %-40s %-6s %12s %7.1f%% %7.1f%%\n", l.node.c_str(), l.op.c_str(), shape.c_str(), 100 * r,
                100.0 * z / n);
  }
  std::printf("kiln-prune: %.1f%% of %lld prunable weights are zero\n", 100.0 * zeros / total, (long long)total);

  std::string tmp = out + ".kiln-tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f || !model.SerializeToOstream(&f)) {
      std::remove(tmp.c_str());
      return fail("cannot write '" + out + "'");
    }
  }
  if (std::rename(tmp.c_str(), out.c_str()) != 0) {
    std::remove(tmp.c_str());
    return fail("cannot write '" + out + "'");
  }
  std::printf("kiln-prune: wrote %s\n", out.c_str());
  return 0;
}
