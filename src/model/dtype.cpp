#include <ckpt/dtype.hpp>

#include <string>

namespace ckpt {

std::size_t dtype_size(dtype t) noexcept {
  switch (t) {
    case dtype::bool_:
    case dtype::i8:
    case dtype::u8:
    case dtype::f8_e4m3:
    case dtype::f8_e5m2:
      return 1;
    case dtype::i16:
    case dtype::u16:
    case dtype::f16:
    case dtype::bf16:
      return 2;
    case dtype::i32:
    case dtype::u32:
    case dtype::f32:
      return 4;
    case dtype::i64:
    case dtype::u64:
    case dtype::f64:
      return 8;
  }
  return 1;
}

std::string_view dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::bool_:
      return "bool";
    case dtype::i8:
      return "i8";
    case dtype::i16:
      return "i16";
    case dtype::i32:
      return "i32";
    case dtype::i64:
      return "i64";
    case dtype::u8:
      return "u8";
    case dtype::u16:
      return "u16";
    case dtype::u32:
      return "u32";
    case dtype::u64:
      return "u64";
    case dtype::f16:
      return "f16";
    case dtype::bf16:
      return "bf16";
    case dtype::f32:
      return "f32";
    case dtype::f64:
      return "f64";
    case dtype::f8_e4m3:
      return "f8_e4m3";
    case dtype::f8_e5m2:
      return "f8_e5m2";
  }
  return "?";
}

result<dtype> parse_dtype(std::string_view name) {
  for (dtype t : all_dtypes) {
    if (dtype_name(t) == name) return t;
  }
  std::string shown(name.substr(0, 64));
  return fail(errc::unknown_dtype, "unknown dtype \"" + shown +
                                       "\" (known: bool, i8, i16, i32, i64, u8, u16, u32, u64, "
                                       "f16, bf16, f32, f64, f8_e4m3, f8_e5m2)");
}

bool is_floating(dtype t) noexcept {
  switch (t) {
    case dtype::f16:
    case dtype::bf16:
    case dtype::f32:
    case dtype::f64:
    case dtype::f8_e4m3:
    case dtype::f8_e5m2:
      return true;
    default:
      return false;
  }
}

}  // namespace ckpt
