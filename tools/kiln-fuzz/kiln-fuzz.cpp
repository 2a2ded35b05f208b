// kiln-fuzz: libFuzzer entry point. Each input is taken as an ONNX model and
// run through the whole compiler pipeline (import, graph passes, lowering,
// arena planning, LLVM dialect, LLVM IR at -O0). Any outcome is fine except
// a crash, a sanitizer report, a hang or runaway memory: bad models must
// fail with diagnostics.
//
//   build-asan/bin/kiln-fuzz -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
//       fuzz-corpus/ test-models/...
// See docs/robustness.md.
#include "kiln/Pipeline.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FileSystem.h"

#include <cstdint>
#include <string>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const std::string out = [] {
    llvm::SmallString<128> dir;
    llvm::sys::fs::createUniqueDirectory("kiln-fuzz", dir);
    return (dir + "/out.ll").str();
  }();
  mlir::DialectRegistry registry;
  kiln::registerKilnDialects(registry);
  mlir::MLIRContext ctx(registry, mlir::MLIRContext::Threading::DISABLED);
  ctx.loadAllAvailableDialects();
  mlir::ScopedDiagnosticHandler quiet(&ctx, [](mlir::Diagnostic &) { return mlir::success(); });

  kiln::CompileOptions opts;
  opts.input = "fuzz.onnx";
  opts.inputBytes = std::string(reinterpret_cast<const char *>(data), size);
  opts.output = out;
  opts.emit = kiln::EmitKind::LLVM;
  opts.optLevel = 0;
  // Keep single inputs small enough to compile quickly.
  opts.import.maxTensorBytes = int64_t(64) << 20;
  (void)kiln::compileModel(ctx, opts);
  return 0;
}
