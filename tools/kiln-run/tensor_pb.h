// Reading and writing ONNX TensorProto files (input_N.pb / output_N.pb)
// without protobuf: a minimal wire-format codec for the fields tensors use.
#ifndef KILN_TOOLS_TENSOR_PB_H
#define KILN_TOOLS_TENSOR_PB_H

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::tools {

struct Tensor {
  std::string name;
  int32_t dtype = 1; // ONNX TensorProto.DataType
  std::vector<int64_t> dims;
  std::vector<float> data; // the values converted to float32 (for printing and tests)
  std::string raw;         // the values in their own dtype, little-endian (what the model reads)
};

/// Bytes per element of an ONNX dtype kiln-run handles (0 if unsupported).
size_t dtypeSize(int32_t dtype);
/// Element i of `t` (from raw when set, else data) as a double.
double valueAt(const Tensor &t, size_t i);

/// Parses a serialized TensorProto. On failure returns false with `err` set.
bool parseTensor(const std::string &bytes, Tensor &out, std::string &err);
bool readTensorFile(const std::string &path, Tensor &out, std::string &err);
std::string serializeTensor(const Tensor &t);
bool writeTensorFile(const std::string &path, const Tensor &t, std::string &err);

} // namespace kiln::tools

#endif
