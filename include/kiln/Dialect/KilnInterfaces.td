// Op interfaces of the kiln dialect: properties that passes query on every op.
#ifndef KILN_INTERFACES
#define KILN_INTERFACES

include "mlir/IR/OpBase.td"

def Kiln_MappingTypeOpInterface : OpInterface<"MappingTypeOpInterface"> {
  let description = [{
    The DNNFusion mapping type of an op: how one output element depends on
    input elements (docs/reference: dnnfusion.md, section 1). Every kiln op
    must answer it so the fusion planner never meets an op it cannot place.
  }];
  let cppNamespace = "::kiln";
  let methods = [
    InterfaceMethod<"The op's mapping type.", "::kiln::MappingType",
                    "getMappingType">,
  ];
}

#endif
