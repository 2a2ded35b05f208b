// Tests of kiln-run's TensorProto codec (tools/kiln-run/tensor_pb.h):
// round trips, hand-encoded messages in each encoding ONNX writers use
// (packed and unpacked, typed fields and raw_data), and malformed input.
#include "tensor_pb.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

using Catch::Matchers::Contains;
using kiln::tools::parseTensor;
using kiln::tools::serializeTensor;
using kiln::tools::Tensor;

namespace {

// A protobuf encoder written from the wire-format spec, independent of the
// codec under test.
enum Wire { Varint = 0, Fixed64 = 1, Len = 2, Fixed32 = 5 };

std::string varint(uint64_t v) {
  std::string s;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    s += char(v ? b | 0x80 : b);
  } while (v);
  return s;
}
std::string key(int field, Wire wire) { return varint(uint64_t(field) << 3 | wire); }
std::string varintField(int field, uint64_t v) { return key(field, Varint) + varint(v); }
std::string lenField(int field, const std::string &payload) {
  return key(field, Len) + varint(payload.size()) + payload;
}
template <typename T> std::string bytesOf(T v) { return std::string((const char *)&v, sizeof v); }

// TensorProto field numbers.
constexpr int kDims = 1, kDataType = 2, kFloatData = 4, kInt32Data = 5, kInt64Data = 7, kName = 8,
              kRawData = 9, kDoubleData = 10;

/// Parses `bytes`, which must succeed.
Tensor parseOk(const std::string &bytes) {
  Tensor t;
  std::string err;
  bool ok = parseTensor(bytes, t, err);
  INFO("parse error: " << err);
  REQUIRE(ok);
  return t;
}

/// Parses `bytes`, which must fail with a message containing `text`.
void parseFails(const std::string &bytes, const std::string &text) {
  Tensor t;
  std::string err;
  CHECK_FALSE(parseTensor(bytes, t, err));
  CHECK_THAT(err, Contains(text));
}

bool sameBits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

} // namespace

TEST_CASE("serializeTensor and parseTensor round trip", "[tensor_pb]") {
  Tensor t;
  t.name = "input:0 with spaces";
  t.dims = {2, 3, 1, 2};
  for (int i = 0; i < 12; ++i)
    t.data.push_back(0.5f * (float)i - 2.0f);
  t.data[3] = -0.0f;
  t.data[4] = std::numeric_limits<float>::infinity();
  t.data[5] = std::numeric_limits<float>::quiet_NaN();
  t.data[6] = std::numeric_limits<float>::denorm_min();
  Tensor u = parseOk(serializeTensor(t));
  CHECK(u.name == t.name);
  CHECK(u.dtype == 1);
  CHECK(u.dims == t.dims);
  CHECK(sameBits(u.data, t.data));
}

TEST_CASE("tensors without elements or without dims round trip", "[tensor_pb]") {
  Tensor scalar;
  scalar.data = {42.5f};
  Tensor u = parseOk(serializeTensor(scalar));
  CHECK(u.dims.empty());
  CHECK(u.data == std::vector<float>{42.5f});
  CHECK(u.name == "");

  Tensor empty;
  empty.name = "e";
  empty.dims = {3, 0, 2};
  Tensor v = parseOk(serializeTensor(empty));
  CHECK(v.dims == empty.dims);
  CHECK(v.data.empty());
}

TEST_CASE("parseTensor reads packed float_data with unpacked dims", "[tensor_pb]") {
  std::string floats;
  for (float f : {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f})
    floats += bytesOf(f);
  std::string msg = varintField(kDims, 2) + varintField(kDims, 3) + varintField(kDataType, 1) +
                    lenField(kFloatData, floats) + lenField(kName, "x");
  Tensor t = parseOk(msg);
  CHECK(t.name == "x");
  CHECK(t.dtype == 1);
  CHECK(t.dims == std::vector<int64_t>{2, 3});
  CHECK(t.data == std::vector<float>{1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f});
}

TEST_CASE("parseTensor reads unpacked float_data with packed dims", "[tensor_pb]") {
  std::string msg = lenField(kName, "y") + lenField(kDims, varint(1) + varint(3));
  for (float f : {4.0f, 5.0f, 6.5f})
    msg += key(kFloatData, Fixed32) + bytesOf(f);
  msg += varintField(kDataType, 1);
  Tensor t = parseOk(msg);
  CHECK(t.dims == std::vector<int64_t>{1, 3});
  CHECK(t.data == std::vector<float>{4.0f, 5.0f, 6.5f});
}

TEST_CASE("parseTensor converts int32 int64 and double data to float", "[tensor_pb]") {
  SECTION("int32_data, packed, negative values as 10-byte varints") {
    std::string packed = varint(7) + varint(uint64_t(int64_t(-3))) + varint(100000);
    Tensor t =
        parseOk(varintField(kDims, 3) + varintField(kDataType, 6) + lenField(kInt32Data, packed));
    CHECK(t.dtype == 6);
    CHECK(t.data == std::vector<float>{7.0f, -3.0f, 100000.0f});
  }
  SECTION("int64_data, unpacked") {
    Tensor t = parseOk(varintField(kDims, 2) + varintField(kDataType, 7) +
                       varintField(kInt64Data, uint64_t(int64_t(-9))) +
                       varintField(kInt64Data, uint64_t(1) << 40));
    CHECK(t.data == std::vector<float>{-9.0f, 1099511627776.0f});
  }
  SECTION("double_data, packed and unpacked") {
    Tensor t = parseOk(varintField(kDims, 3) + varintField(kDataType, 11) +
                       lenField(kDoubleData, bytesOf(0.5) + bytesOf(-1.25)) +
                       key(kDoubleData, Fixed64) + bytesOf(1e10));
    CHECK(t.data == std::vector<float>{0.5f, -1.25f, 1e10f});
  }
}

TEST_CASE("parseTensor converts raw_data of every supported dtype", "[tensor_pb]") {
  auto raw = [](int dtype, const std::string &bytes, int64_t n) {
    return parseOk(varintField(kDims, n) + varintField(kDataType, dtype) +
                   lenField(kRawData, bytes))
        .data;
  };
  CHECK(raw(1, bytesOf(1.5f) + bytesOf(-2.0f), 2) == std::vector<float>{1.5f, -2.0f});
  CHECK(raw(6, bytesOf(int32_t(-5)) + bytesOf(int32_t(9)), 2) == std::vector<float>{-5, 9});
  CHECK(raw(7, bytesOf(int64_t(-8589934592)), 1) == std::vector<float>{-8589934592.0f});
  CHECK(raw(11, bytesOf(0.125), 1) == std::vector<float>{0.125f});
  CHECK(raw(9, std::string("\x01\x00\x01", 3), 3) == std::vector<float>{1, 0, 1});
  CHECK(raw(2, "\xff\x02", 2) == std::vector<float>{255, 2});
  CHECK(raw(3, "\xff\x02", 2) == std::vector<float>{-1, 2});
  CHECK(raw(4, bytesOf(uint16_t(65535)) + bytesOf(uint16_t(7)), 2) == std::vector<float>{65535, 7});
  CHECK(raw(5, bytesOf(int16_t(-300)), 1) == std::vector<float>{-300});
  CHECK(raw(12, bytesOf(uint32_t(4000000000u)), 1) == std::vector<float>{4000000000.0f});
  CHECK(raw(13, bytesOf(uint64_t(1) << 63), 1) == std::vector<float>{9223372036854775808.0f});
  // float16: 1.0, -2.5, the largest finite (65504), the smallest subnormal
  // (2^-24), infinity; bfloat16: the top half of a float32.
  CHECK(raw(10, bytesOf(uint16_t(0x3c00)) + bytesOf(uint16_t(0xc100)) + bytesOf(uint16_t(0x7bff)) +
                    bytesOf(uint16_t(0x0001)) + bytesOf(uint16_t(0x7c00)), 5) ==
        std::vector<float>{1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24),
                           std::numeric_limits<float>::infinity()});
  CHECK(raw(16, bytesOf(uint16_t(0x3fc0)) + bytesOf(uint16_t(0xbf80)), 2) == std::vector<float>{1.5f, -1.0f});
  // float8 (values from the ONNX float8 spec): e4m3fn max 448, smallest
  // subnormal 2^-9, -1.0; e5m2 max 57344 and -infinity; the fnuz formats'
  // bias is one more, and 0x80 is their NaN.
  CHECK(raw(17, "\x7e\x01\xb8", 3) == std::vector<float>{448.0f, std::ldexp(1.0f, -9), -1.0f});
  CHECK(raw(19, "\x7b\xfc", 2) == std::vector<float>{57344.0f, -std::numeric_limits<float>::infinity()});
  CHECK(raw(18, "\x40", 1) == std::vector<float>{1.0f});
  CHECK(raw(20, "\x40", 1) == std::vector<float>{1.0f});
  CHECK(std::isnan(raw(18, "\x80", 1)[0]));
  CHECK(std::isnan(raw(17, "\x7f", 1)[0]));
}

TEST_CASE("parseTensor reads float16 bits from int32_data and uint64 from uint64_data", "[tensor_pb]") {
  constexpr int kUint64Data = 11;
  Tensor h = parseOk(varintField(kDims, 2) + varintField(kDataType, 10) +
                     lenField(kInt32Data, varint(0x3800) + varint(0xbc00)));
  CHECK(h.data == std::vector<float>{0.5f, -1.0f});
  CHECK(h.raw == bytesOf(uint16_t(0x3800)) + bytesOf(uint16_t(0xbc00)));
  Tensor u = parseOk(varintField(kDims, 1) + varintField(kDataType, 13) +
                     varintField(kUint64Data, ~uint64_t(0)));
  CHECK(u.raw == bytesOf(~uint64_t(0)));
}

TEST_CASE("parseTensor skips fields it does not use", "[tensor_pb]") {
  std::string msg = varintField(14, 1) +               // data_location
                    lenField(3, varintField(1, 0)) +   // segment
                    lenField(13, lenField(1, "k")) +   // external_data
                    key(15, Fixed32) + bytesOf(1.0f) + // unknown fixed32
                    key(16, Fixed64) + bytesOf(2.0) +  // unknown fixed64
                    varintField(kDims, 1) + lenField(kRawData, bytesOf(3.0f));
  Tensor t = parseOk(msg);
  CHECK(t.dims == std::vector<int64_t>{1});
  CHECK(t.data == std::vector<float>{3.0f});
}

TEST_CASE("parseTensor rejects every truncation of a valid message", "[tensor_pb]") {
  Tensor t;
  t.name = "truncated";
  t.dims = {2, 2};
  t.data = {1, 2, 3, 4};
  std::string bytes = serializeTensor(t);
  for (size_t n = 0; n < bytes.size(); ++n) {
    INFO("first " << n << " of " << bytes.size() << " bytes");
    Tensor u;
    std::string err;
    CHECK_FALSE(parseTensor(bytes.substr(0, n), u, err));
    CHECK(err != "");
  }
}

TEST_CASE("parseTensor rejects malformed wire data", "[tensor_pb]") {
  std::string payload = varintField(kDims, 1) + lenField(kRawData, bytesOf(1.0f));
  SECTION("length beyond the end") {
    parseFails(payload + key(kName, Len) + varint(10) + "abc", "malformed");
  }
  SECTION("varint longer than 10 bytes") {
    parseFails(payload + key(kDims, Varint) + std::string(11, '\x80') + '\x01', "malformed");
  }
  SECTION("group wire types") { parseFails(payload + key(20, Wire(3)), "malformed"); }
  SECTION("truncated packed dims") {
    parseFails(lenField(kDims, std::string("\x81", 1)) + lenField(kRawData, ""), "malformed");
  }
  SECTION("packed float_data of a length that is not a multiple of 4") {
    parseFails(varintField(kDims, 1) + lenField(kFloatData, bytesOf(1.0f) + "x"), "malformed");
  }
}

TEST_CASE("parseTensor rejects data that does not match the dims", "[tensor_pb]") {
  SECTION("raw_data too short") {
    parseFails(varintField(kDims, 3) + lenField(kRawData, bytesOf(1.0f) + bytesOf(2.0f)),
               "raw_data size does not match dims");
  }
  SECTION("raw_data too long") {
    parseFails(varintField(kDims, 1) + lenField(kRawData, bytesOf(1.0f) + bytesOf(2.0f)),
               "raw_data size does not match dims");
  }
  SECTION("raw_data of an int64 tensor sized for int32") {
    parseFails(varintField(kDims, 2) + varintField(kDataType, 7) +
                   lenField(kRawData, bytesOf(int32_t(1)) + bytesOf(int32_t(2))),
               "raw_data size does not match dims");
  }
  SECTION("typed data count") {
    parseFails(varintField(kDims, 2) + lenField(kFloatData, bytesOf(1.0f)),
               "element count does not match dims");
  }
  SECTION("no data at all") { parseFails(varintField(kDims, 2), "element count does not match"); }
  SECTION("raw_data of an unsupported dtype") {
    parseFails(varintField(kDims, 1) + varintField(kDataType, 21) + lenField(kRawData, "a"),
               "unsupported dtype 21");
  }
  SECTION("negative dimension") {
    parseFails(varintField(kDims, uint64_t(int64_t(-2))) + lenField(kRawData, ""), "bad dimension");
  }
  SECTION("element count overflowing 64 bits") {
    // 2^32 * 2^32 wraps to 0 elements, which would match empty data.
    parseFails(varintField(kDims, uint64_t(1) << 32) + varintField(kDims, uint64_t(1) << 32) +
                   lenField(kRawData, ""),
               "bad dimension");
  }
}

TEST_CASE("tensor files are written and read back", "[tensor_pb]") {
  std::string path = "/tmp/kiln-unit-test-tensor-" + std::to_string(getpid()) + ".pb";
  Tensor t;
  t.name = "file";
  t.dims = {3};
  t.data = {1.0f, 2.0f, 3.0f};
  std::string err;
  REQUIRE(kiln::tools::writeTensorFile(path, t, err));
  Tensor u;
  REQUIRE(kiln::tools::readTensorFile(path, u, err));
  CHECK(u.name == "file");
  CHECK(u.data == t.data);
  std::remove(path.c_str());

  CHECK_FALSE(kiln::tools::readTensorFile(path, u, err));
  CHECK_THAT(err, Contains("cannot open " + path));
  CHECK_FALSE(kiln::tools::writeTensorFile("/nonexistent-kiln-dir/t.pb", t, err));
  CHECK_THAT(err, Contains("cannot write /nonexistent-kiln-dir/t.pb"));
}
