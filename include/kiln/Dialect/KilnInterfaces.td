// Op interfaces of the kiln dialect: properties that passes query on every op.
#ifndef KILN_INTERFACES
#define KILN_INTERFACES

include "mlir/IR/OpBase.td"

def Kiln_MappingTypeOpInterface : OpInterface<"MappingTypeOpInterface"> {
  let description = [{
    What the DNNFusion passes need to know of every op (dnnfusion.md):
    - its mapping type: how one output element depends on input elements
      (section 1), which drives the fusion table;
    - its algebraic properties (section 3), which drive graph rewriting and
      cut the rewriting partitions;
    - its cost: floating-point operations and bytes moved when run alone.
    Every kiln op must answer, so no pass meets an op it cannot place.
    docs/op-table.md lists the answers (`kiln-opt --kiln-op-table`).
  }];
  let cppNamespace = "::kiln";
  let methods = [
    InterfaceMethod<"The op's mapping type (depends on operand shapes for broadcasting ops).",
                    "::kiln::MappingType", "getMappingType">,
    StaticInterfaceMethod<"The mapping type when no operand broadcasts (for docs/op-table.md).",
                          "::kiln::MappingType", "getBaseMappingType">,
    StaticInterfaceMethod<"True when broadcasting operands make the op One-to-Many.",
                          "bool", "isBroadcasting">,
    StaticInterfaceMethod<"Algebraic properties, a mask of kiln::AlgebraicProperty.",
                          "unsigned", "getAlgebraicProperties">,
    StaticInterfaceMethod<"Floating-point operations per result element, for the cost model.",
                          "double", "getFlopsPerElement">,
    StaticInterfaceMethod<"How the FLOP count is formed, for docs/op-table.md.",
                          "::llvm::StringRef", "getCostFormula">,
    InterfaceMethod<"FLOPs and bytes moved when the op runs alone.", "::kiln::OpCost",
                    "getCost", (ins), [{}], [{
      return ::kiln::defaultCost($_op.getOperation(), $_op.getFlopsPerElement());
    }]>,
  ];
}

#endif
