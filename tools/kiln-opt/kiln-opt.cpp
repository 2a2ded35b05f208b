// kiln-opt: mlir-opt with the kiln dialect and passes, for lit tests.
#include "kiln/Dialect/KilnDialect.h"
#include "kiln/Pipeline.h"
#include "kiln/Transforms/Passes.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  kiln::registerKilnDialects(registry);
  // `kiln-opt --kiln-op-table` prints docs/op-table.md's table.
  if (argc == 2 && llvm::StringRef(argv[1]) == "--kiln-op-table") {
    mlir::MLIRContext ctx(registry);
    ctx.loadAllAvailableDialects();
    kiln::printOpTable(ctx, llvm::outs());
    return 0;
  }
  kiln::registerKilnPasses();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  return mlir::asMainReturnCode(mlir::MlirOptMain(argc, argv, "kiln optimizer driver\n", registry));
}
