// --fusion-report=FILE: the fusion plan as a picture. Every op is a node
// labelled with its ONNX node name, kiln op and mapping type; every fusion
// block is an outlined, coloured cluster titled with its id, op count and
// fused mapping type. Written as Graphviz DOT (.dot), or rendered by
// Graphviz's `dot` to .svg, .png, or .html (the SVG inside a page with a
// legend). Graphviz comes from Debian (scripts/setup.sh installs it).
#include "kiln/Pipeline.h"
#include "kiln/Dialect/KilnDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

using namespace mlir;

namespace kiln {
namespace {

std::string escape(llvm::StringRef s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

/// "conv1 (Conv)" from the op's fused location, or the kiln op name.
std::string nodeName(Operation *op) {
  if (auto fused = dyn_cast<FusedLoc>(op->getLoc()))
    for (Location l : fused.getLocations())
      if (auto n = dyn_cast<NameLoc>(l)) return n.getName().str();
  if (auto n = dyn_cast<NameLoc>(op->getLoc())) return n.getName().str();
  return "";
}

const char *kPalette[] = {"#fde0dd", "#deebf7", "#e5f5e0", "#fff7bc", "#efedf5",
                          "#fee6ce", "#e0f3f8", "#f2f0f7", "#fcc5c0", "#c7e9c0"};

void writeDot(func::FuncOp fn, llvm::raw_ostream &os) {
  os << "digraph fusion {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", "
        "fillcolor=white, fontname=\"Helvetica\", fontsize=10];\n";
  DenseMap<Operation *, int> ids;
  // The producer node of each value: ops inside blocks, graph inputs, and
  // block results resolved to the op that yields them.
  DenseMap<Value, std::string> producer;
  int next = 0;
  auto nodeId = [&](Operation *op) {
    auto [it, fresh] = ids.try_emplace(op, next);
    if (fresh) ++next;
    return "n" + std::to_string(it->second);
  };
  auto label = [&](Operation *op) {
    std::string name = nodeName(op);
    std::string mapping;
    if (auto m = dyn_cast<MappingTypeOpInterface>(op))
      mapping = stringifyMappingType(m.getMappingType()).str();
    return (name.empty() ? "" : escape(name) + "\\n") + escape(op->getName().getStringRef()) +
           (mapping.empty() ? "" : "\\n" + mapping);
  };
  for (BlockArgument a : fn.getArguments()) {
    std::string id = "in" + std::to_string(a.getArgNumber());
    os << fmt::format("  {} [label=\"input {}\", shape=ellipse];\n", id, a.getArgNumber());
    producer[a] = id;
  }
  auto inputName = [&](FusedOp f, BlockArgument a) { return producer.lookup(f.getInputs()[a.getArgNumber()]); };
  SmallVector<std::pair<std::string, std::string>> edges;
  for (Operation &op : fn.getBody().front()) {
    if (auto f = dyn_cast<FusedOp>(op)) {
      int64_t id = f.getBlockId();
      auto yield = cast<YieldOp>(f.getBody().front().getTerminator());
      int nOps = (int)f.getBody().front().getOperations().size() - 1;
      os << fmt::format("  subgraph cluster_{} {{\n    label=\"block {}: {} op{}, {}\";\n"
                        "    style=\"filled,rounded\"; color=\"#444444\"; fillcolor=\"{}\";\n",
                        id, id, nOps, nOps == 1 ? "" : "s",
                        stringifyMappingType(f.getMappingType()).str(),
                        kPalette[id % (sizeof(kPalette) / sizeof(kPalette[0]))]);
      for (Operation &inner : f.getBody().front().without_terminator()) {
        os << fmt::format("    {} [label=\"{}\"];\n", nodeId(&inner), label(&inner));
        for (Value v : inner.getOperands()) {
          std::string from;
          if (auto a = dyn_cast<BlockArgument>(v)) from = inputName(f, a);
          else if (v.getDefiningOp()) from = nodeId(v.getDefiningOp());
          if (!from.empty()) edges.push_back({from, nodeId(&inner)});
        }
      }
      os << "  }\n";
      for (auto [r, y] : llvm::zip(f.getResults(), yield.getValues()))
        producer[r] = y.getDefiningOp() ? nodeId(y.getDefiningOp()) : "";
      continue;
    }
    if (isa<ConstantOp>(op) || isa<func::ReturnOp>(op)) {
      if (auto ret = dyn_cast<func::ReturnOp>(op))
        for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
          std::string id = "out" + std::to_string(i);
          os << fmt::format("  {} [label=\"output {}\", shape=ellipse];\n", id, i);
          if (!producer.lookup(v).empty()) edges.push_back({producer.lookup(v), id});
        }
      continue;
    }
    // Ops outside any block: views (Reshape) that need no kernel.
    os << fmt::format("  {} [label=\"{}\", style=\"rounded,dashed\"];\n", nodeId(&op), label(&op));
    for (Value v : op.getOperands())
      if (!producer.lookup(v).empty()) edges.push_back({producer.lookup(v), nodeId(&op)});
    for (Value r : op.getResults()) producer[r] = nodeId(&op);
  }
  for (auto &[a, b] : edges) os << fmt::format("  {} -> {};\n", a, b);
  os << "}\n";
}

} // namespace

LogicalResult writeFusionReport(ModuleOp m, const std::string &path) {
  auto fn = m.lookupSymbol<func::FuncOp>("main");
  if (!fn)
    return emitError(m.getLoc()) << "fusion report: no @main";
  llvm::StringRef ext = llvm::sys::path::extension(path);
  auto fail = [&](const llvm::Twine &msg) { return emitError(m.getLoc()) << "fusion report: " << msg; };
  if (ext == ".dot") {
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    if (ec) return fail("cannot write '" + path + "': " + ec.message());
    writeDot(fn, os);
    return success();
  }
  if (ext != ".svg" && ext != ".png" && ext != ".html")
    return fail("unknown format '" + ext + "' (use .dot, .svg, .png or .html)");
  auto dot = llvm::sys::findProgramByName("dot");
  if (!dot)
    return fail("Graphviz 'dot' is not installed (apt install graphviz), or write a .dot file");
  llvm::SmallString<128> dotFile;
  if (llvm::sys::fs::createTemporaryFile("kiln-fusion", "dot", dotFile))
    return fail("cannot create a temporary file");
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(dotFile, ec);
    if (ec) return fail("cannot write a temporary file");
    writeDot(fn, os);
  }
  std::string rendered = ext == ".html" ? path + ".svg.tmp" : path;
  std::string format = ext == ".png" ? "-Tpng" : "-Tsvg";
  llvm::SmallVector<llvm::StringRef> args{*dot, format, "-o", rendered, dotFile};
  std::string err;
  int rc = llvm::sys::ExecuteAndWait(*dot, args, std::nullopt, {}, 120, 0, &err);
  llvm::sys::fs::remove(dotFile);
  if (rc != 0)
    return fail("dot failed (" + std::to_string(rc) + ")" + (err.empty() ? "" : ": " + err));
  if (ext != ".html")
    return success();
  auto svg = llvm::MemoryBuffer::getFile(rendered);
  llvm::sys::fs::remove(rendered);
  if (!svg)
    return fail("dot wrote nothing");
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec) return fail("cannot write '" + path + "': " + ec.message());
  int64_t blocks = 0;
  fn.walk([&](FusedOp) { ++blocks; });
  os << "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>kiln fusion report</title>\n"
        "<style>body{font-family:Helvetica,sans-serif;margin:1em} .legend{margin-bottom:1em}</style>\n"
        "</head><body>\n<h1>kiln fusion report</h1>\n<div class=\"legend\">"
     << blocks
     << " fusion blocks (one kernel each). Each coloured box is a block; each op shows its ONNX node, "
        "kiln op and mapping type. Dashed ops are views outside any block (no kernel). An op outside a "
        "block next to it was kept apart by the fusion table (e.g. Many-to-Many after Many-to-Many), "
        "by the cost model, or because its result is needed by more than one block.</div>\n"
     << (*svg)->getBuffer() << "\n</body></html>\n";
  return success();
}

} // namespace kiln
