// ckpt-inspect export CKPT_DIR LEAF -o FILE.npy [--to f32]: one leaf as a NumPy .npy v1.0 file.
//
// Format (numpy/lib/format.py, version 1.0): the magic "\x93NUMPY", bytes 1 and 0, a
// little-endian uint16 header length, then an ASCII Python dict literal
// "{'descr': '<f4', 'fortran_order': False, 'shape': (640, 2560), }" padded with spaces and
// ended by '\n' so that the data starts at a multiple of 64 bytes; then the data in C order.
// NumPy has no bfloat16 or float8: those leaves are written as their raw bits (<u2, |u1) with a
// note on stderr, or converted to float32 with --to f32.
#include "common.hpp"

#include <ckpt/load.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>

namespace ckpt::inspect {

namespace {

// NumPy's descr for each dtype; bf16 and f8 as raw unsigned bits.
std::string npy_descr(dtype t) {
  switch (t) {
    case dtype::bool_:
      return "|b1";
    case dtype::i8:
      return "|i1";
    case dtype::i16:
      return "<i2";
    case dtype::i32:
      return "<i4";
    case dtype::i64:
      return "<i8";
    case dtype::u8:
      return "|u1";
    case dtype::u16:
      return "<u2";
    case dtype::u32:
      return "<u4";
    case dtype::u64:
      return "<u8";
    case dtype::f16:
      return "<f2";
    case dtype::bf16:
      return "<u2";
    case dtype::f32:
      return "<f4";
    case dtype::f64:
      return "<f8";
    case dtype::f8_e4m3:
      return "|u1";
    case dtype::f8_e5m2:
      return "|u1";
  }
  return "|u1";
}

std::string npy_header(const std::string& descr, const ckpt::shape& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  // magic (6) + version (2) + length (2) + dict + padding + '\n' = multiple of 64.
  const std::size_t total = align_up(10 + dict.size() + 1, 64);
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  const auto len = static_cast<std::uint16_t>(dict.size());
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>(len >> 8);
  return out + dict;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

// float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN.
float e4m3_to_float(std::uint8_t b) {
  const std::uint32_t sign = b >> 7, exp = (b >> 3) & 0xf, man = b & 7;
  float v;
  if (exp == 15 && man == 7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -9);
  } else {
    v = std::ldexp(static_cast<float>(man | 8), static_cast<int>(exp) - 10);
  }
  return sign ? -v : v;
}

template <class T>
void convert(std::span<const std::byte> in, float* out, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) {
    T x;
    std::memcpy(&x, in.data() + i * sizeof(T), sizeof(T));
    out[i] = static_cast<float>(x);
  }
}

std::vector<float> to_f32(const ckpt::array& arr) {
  const std::uint64_t n = arr.num_elements();
  std::vector<float> out(n);
  auto in = arr.bytes();
  switch (arr.dtype()) {
    case dtype::bool_:
      convert<std::uint8_t>(in, out.data(), n);
      break;
    case dtype::i8:
      convert<std::int8_t>(in, out.data(), n);
      break;
    case dtype::i16:
      convert<std::int16_t>(in, out.data(), n);
      break;
    case dtype::i32:
      convert<std::int32_t>(in, out.data(), n);
      break;
    case dtype::i64:
      convert<std::int64_t>(in, out.data(), n);
      break;
    case dtype::u8:
      convert<std::uint8_t>(in, out.data(), n);
      break;
    case dtype::u16:
      convert<std::uint16_t>(in, out.data(), n);
      break;
    case dtype::u32:
      convert<std::uint32_t>(in, out.data(), n);
      break;
    case dtype::u64:
      convert<std::uint64_t>(in, out.data(), n);
      break;
    case dtype::f32:
      convert<float>(in, out.data(), n);
      break;
    case dtype::f64:
      convert<double>(in, out.data(), n);
      break;
    case dtype::f16:
    case dtype::bf16:
      for (std::uint64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, in.data() + 2 * i, 2);
        out[i] = arr.dtype() == dtype::bf16
                     ? std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16)
                     : half_to_float(h);
      }
      break;
    case dtype::f8_e4m3:
    case dtype::f8_e5m2:
      for (std::uint64_t i = 0; i < n; ++i) {
        const auto b = static_cast<std::uint8_t>(in[i]);
        // e5m2 is the top byte of an IEEE half.
        out[i] = arr.dtype() == dtype::f8_e5m2 ? half_to_float(static_cast<std::uint16_t>(b << 8))
                                               : e4m3_to_float(b);
      }
      break;
  }
  return out;
}

}  // namespace

int export_main(const args& a) {
  constexpr std::string_view usage = "export CKPT_DIR LEAF -o FILE.npy [--to f32]";
  expect_positional(a, 2, usage);
  if (!a.output)
    throw usage_error(std::string("missing -o FILE.npy; usage: ckpt-inspect ") +
                      std::string(usage));
  if (a.to && *a.to != "f32") throw usage_error("--to accepts only f32, not " + *a.to);
  const std::string ckpt_dir = a.positional[0], leaf = a.positional[1];
  // Check the path names a leaf first, for a clear message (load_subtree takes subtrees too).
  const opened ck = open_checkpoint(ckpt_dir);
  const tree* node = ck.structure.find(leaf);
  if (!node) throw tool_error("no leaf \"" + leaf + "\" in " + ckpt_dir);
  if (!node->is_leaf()) {
    throw tool_error("\"" + leaf + "\" in " + ckpt_dir + " is a " +
                     (node->is_dict()   ? "dict"
                      : node->is_list() ? "list"
                                        : "None") +
                     ", not a leaf");
  }
  auto t = load_subtree_blocking(ckpt_dir, leaf);
  if (!t) throw tool_error(t.error().message().empty() ? t.error().what() : t.error().message());
  const ckpt::array& arr = t.value().leaf();
  std::string descr = npy_descr(arr.dtype());
  std::vector<float> converted;
  std::span<const std::byte> data = arr.bytes();
  if (a.to) {
    converted = to_f32(arr);
    descr = "<f4";
    data = std::as_bytes(std::span(converted));
  } else if (arr.dtype() == dtype::bf16 || arr.dtype() == dtype::f8_e4m3 ||
             arr.dtype() == dtype::f8_e5m2) {
    std::fprintf(stderr,
                 "ckpt-inspect: note: NumPy has no %s; wrote its raw bits as %s (use --to f32 "
                 "to convert)\n",
                 std::string(dtype_name(arr.dtype())).c_str(), descr.c_str());
  }
  const std::string header = npy_header(descr, arr.shape());
  std::ofstream out(*a.output, std::ios::binary | std::ios::trunc);
  if (!out) throw tool_error("cannot create " + *a.output + ": " + std::strerror(errno));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) throw tool_error("write " + *a.output + ": " + std::strerror(errno));
  return exit_ok;
}

}  // namespace ckpt::inspect
