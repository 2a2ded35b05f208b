#include "tensor_pb.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kiln::tools {
namespace {

struct Reader {
  const uint8_t *p, *end;
  bool ok = true;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) { ok = false; return 0; }
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ok = false;
    return 0;
  }
  bool bytes(uint64_t n, const uint8_t *&out) {
    if ((uint64_t)(end - p) < n) { ok = false; return false; }
    out = p;
    p += n;
    return true;
  }
};

void putVarint(std::string &s, uint64_t v) {
  while (v >= 0x80) {
    s += char((v & 0x7f) | 0x80);
    v >>= 7;
  }
  s += char(v);
}

} // namespace

size_t dtypeSize(int32_t dtype) {
  switch (dtype) {
  case 1: case 6: case 12: return 4;          // float, int32, uint32
  case 7: case 11: case 13: return 8;         // int64, double, uint64
  case 4: case 5: case 10: case 16: return 2; // uint16, int16, float16, bfloat16
  case 2: case 3: case 9: return 1;           // uint8, int8, bool
  case 17: case 18: case 19: case 20: return 1; // float8 formats
  default: return 0;
  }
}

namespace {
/// IEEE half bits to float.
float halfToFloat(uint16_t h) {
  int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float mag = exp == 0x1f ? (man ? NAN : INFINITY)
              : exp       ? std::ldexp((float)(man | 0x400), exp - 25)
                          : std::ldexp((float)man, -24);
  return (h & 0x8000) ? -mag : mag;
}

/// A float8 byte as a float: formats by (exponent bits, bias, fnuz), from
/// the ONNX float8 spec; written independently of the compiler's converter.
double float8ToDouble(uint8_t b, int expBits, int bias, bool fnuz) {
  int manBits = 7 - expBits, e = (b >> manBits) & ((1 << expBits) - 1), m = b & ((1 << manBits) - 1);
  bool neg = b & 0x80;
  if (fnuz && b == 0x80) return NAN;
  if (!fnuz && expBits == 4 && (b & 0x7f) == 0x7f) return NAN;
  if (!fnuz && expBits == 5 && e == 31) return m ? NAN : (neg ? -INFINITY : INFINITY);
  double mag = e ? std::ldexp(1.0 + m / double(1 << manBits), e - bias) : std::ldexp(m / double(1 << manBits), 1 - bias);
  return neg ? -mag : mag;
}

/// Element i of little-endian bytes of an ONNX dtype, as a double.
double decode(const char *q, int32_t dtype) {
  switch (dtype) {
  case 1: { float v; memcpy(&v, q, 4); return v; }
  case 2: return (uint8_t)q[0];
  case 3: return (int8_t)q[0];
  case 4: { uint16_t v; memcpy(&v, q, 2); return v; }
  case 5: { int16_t v; memcpy(&v, q, 2); return v; }
  case 6: { int32_t v; memcpy(&v, q, 4); return v; }
  case 7: { int64_t v; memcpy(&v, q, 8); return (double)v; }
  case 9: return q[0] != 0;
  case 10: { uint16_t v; memcpy(&v, q, 2); return halfToFloat(v); }
  case 11: { double v; memcpy(&v, q, 8); return v; }
  case 12: { uint32_t v; memcpy(&v, q, 4); return v; }
  case 13: { uint64_t v; memcpy(&v, q, 8); return (double)v; }
  case 16: { uint16_t v; memcpy(&v, q, 2); uint32_t b = (uint32_t)v << 16; float f; memcpy(&f, &b, 4); return f; }
  case 17: return float8ToDouble((uint8_t)q[0], 4, 7, false);
  case 18: return float8ToDouble((uint8_t)q[0], 4, 8, true);
  case 19: return float8ToDouble((uint8_t)q[0], 5, 15, false);
  case 20: return float8ToDouble((uint8_t)q[0], 5, 16, true);
  default: return 0;
  }
}

/// Stores a value from a typed field (float_data, int32_data, ...) as the
/// dtype's bytes; float16/bfloat16 arrive as their bit patterns.
void encode(char *q, int32_t dtype, double v, uint64_t bitsOrInt) {
  switch (dtype) {
  case 1: { float f = (float)v; memcpy(q, &f, 4); break; }
  case 11: memcpy(q, &v, 8); break;
  default: memcpy(q, &bitsOrInt, dtypeSize(dtype)); break; // little-endian truncation
  }
}
} // namespace

double valueAt(const Tensor &t, size_t i) {
  if (t.raw.empty()) return t.data[i];
  return decode(t.raw.data() + i * dtypeSize(t.dtype), t.dtype);
}

bool parseTensor(const std::string &bytes, Tensor &out, std::string &err) {
  Reader r{(const uint8_t *)bytes.data(), (const uint8_t *)bytes.data() + bytes.size()};
  out = Tensor{};
  std::string raw;
  bool hasRaw = false;
  std::vector<double> nums;
  std::vector<uint64_t> ints; // the same values as integers (int32/int64/uint64_data)
  while (r.ok && r.p < r.end) {
    uint64_t key = r.varint();
    if (!r.ok) break;
    uint32_t field = key >> 3, wire = key & 7;
    if (wire == 0) {
      uint64_t v = r.varint();
      if (field == 1) out.dims.push_back((int64_t)v);
      else if (field == 2) out.dtype = (int32_t)v;
      else if (field == 5 || field == 7 || field == 11) {
        nums.push_back(field == 5 ? (double)(int32_t)v : field == 7 ? (double)(int64_t)v : (double)v);
        ints.push_back(field == 5 ? (uint64_t)(int64_t)(int32_t)v : v);
      }
    } else if (wire == 2) {
      uint64_t n = r.varint();
      const uint8_t *d;
      if (!r.bytes(n, d)) break;
      if (field == 8) out.name.assign((const char *)d, n);
      else if (field == 9) { raw.assign((const char *)d, n); hasRaw = true; }
      else if (field == 1 || field == 5 || field == 7 || field == 11) { // packed varints
        Reader pr{d, d + n};
        while (pr.ok && pr.p < pr.end) {
          uint64_t v = pr.varint();
          if (field == 1) { out.dims.push_back((int64_t)v); continue; }
          nums.push_back(field == 5 ? (double)(int32_t)v : field == 7 ? (double)(int64_t)v : (double)v);
          ints.push_back(field == 5 ? (uint64_t)(int64_t)(int32_t)v : v);
        }
        if (!pr.ok) r.ok = false;
      } else if (field == 4) { // packed floats
        if (n % 4) r.ok = false;
        for (uint64_t i = 0; i + 4 <= n; i += 4) { float f; memcpy(&f, d + i, 4); nums.push_back(f); }
      } else if (field == 10) { // packed doubles
        if (n % 8) r.ok = false;
        for (uint64_t i = 0; i + 8 <= n; i += 8) { double f; memcpy(&f, d + i, 8); nums.push_back(f); }
      }
    } else if (wire == 5) {
      const uint8_t *d;
      if (!r.bytes(4, d)) break;
      if (field == 4) { float f; memcpy(&f, d, 4); nums.push_back(f); }
    } else if (wire == 1) {
      const uint8_t *d;
      if (!r.bytes(8, d)) break;
      if (field == 10) { double f; memcpy(&f, d, 8); nums.push_back(f); }
    } else {
      r.ok = false;
    }
  }
  if (!r.ok) {
    err = "malformed TensorProto";
    return false;
  }
  // At most 2^40 elements; checked before multiplying so that n cannot wrap.
  const int64_t maxElements = int64_t(1) << 40;
  int64_t n = 1;
  for (int64_t d : out.dims) {
    if (d < 0 || d > maxElements || (d > 0 && n > maxElements / d)) { err = "bad dimension"; return false; }
    n *= d;
  }
  size_t es = dtypeSize(out.dtype);
  if (hasRaw) {
    if (!es) { err = "unsupported dtype " + std::to_string(out.dtype); return false; }
    if (raw.size() != (size_t)n * es) { err = "raw_data size does not match dims"; return false; }
    out.data.resize(n);
    for (int64_t i = 0; i < n; ++i) out.data[i] = (float)decode(raw.data() + i * es, out.dtype);
    out.raw = raw;
  } else {
    if ((int64_t)nums.size() != n) { err = "element count does not match dims"; return false; }
    bool integral = ints.size() == nums.size();
    if (es) {
      out.raw.resize(n * es);
      for (int64_t i = 0; i < n; ++i)
        encode(&out.raw[i * es], out.dtype, nums[i], integral ? ints[i] : (uint64_t)(int64_t)nums[i]);
      out.data.resize(n);
      for (int64_t i = 0; i < n; ++i) out.data[i] = (float)decode(&out.raw[i * es], out.dtype);
    } else {
      out.data.assign(nums.begin(), nums.end());
    }
  }
  return true;
}

bool readTensorFile(const std::string &path, Tensor &out, std::string &err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) { err = "cannot open " + path; return false; }
  std::stringstream ss;
  ss << f.rdbuf();
  if (!parseTensor(ss.str(), out, err)) { err = path + ": " + err; return false; }
  return true;
}

std::string serializeTensor(const Tensor &t) {
  std::string s;
  bool useRaw = !t.raw.empty();
  for (int64_t d : t.dims) { s += char(1 << 3 | 0); putVarint(s, (uint64_t)d); }
  s += char(2 << 3 | 0);
  putVarint(s, useRaw ? (uint64_t)t.dtype : 1); // float32 when only data is set
  s += char(8 << 3 | 2);
  putVarint(s, t.name.size());
  s += t.name;
  s += char(9 << 3 | 2);
  if (useRaw) {
    putVarint(s, t.raw.size());
    s += t.raw;
  } else {
    putVarint(s, t.data.size() * 4);
    s.append((const char *)t.data.data(), t.data.size() * 4);
  }
  return s;
}

bool writeTensorFile(const std::string &path, const Tensor &t, std::string &err) {
  std::ofstream f(path, std::ios::binary);
  std::string s = serializeTensor(t);
  f.write(s.data(), s.size());
  if (!f) { err = "cannot write " + path; return false; }
  return true;
}

} // namespace kiln::tools
