// ckpt/dtype.hpp - element types of array leaves.
#pragma once

#include <ckpt/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ckpt {

/// The element types a leaf may hold. The numeric values are ckpt's own and never written to
/// disk (the format stores canonical names).
enum class dtype : std::uint8_t {
  bool_,
  i8,
  i16,
  i32,
  i64,
  u8,
  u16,
  u32,
  u64,
  f16,
  bf16,
  f32,
  f64,
  f8_e4m3,
  f8_e5m2,
};

inline constexpr std::array<dtype, 15> all_dtypes = {
    dtype::bool_, dtype::i8,  dtype::i16, dtype::i32,     dtype::i64,
    dtype::u8,    dtype::u16, dtype::u32, dtype::u64,     dtype::f16,
    dtype::bf16,  dtype::f32, dtype::f64, dtype::f8_e4m3, dtype::f8_e5m2};

/// Size of one element in bytes (1, 2, 4 or 8).
std::size_t dtype_size(dtype t) noexcept;
/// Canonical name: "bool", "i8".."u64", "f16", "bf16", "f32", "f64", "f8_e4m3", "f8_e5m2".
std::string_view dtype_name(dtype t) noexcept;
/// Parses a canonical name; unknown names give `errc::unknown_dtype` naming the input.
result<dtype> parse_dtype(std::string_view name);
/// True for the floating-point types (including bf16 and fp8).
bool is_floating(dtype t) noexcept;

/// The dtype of a C++ element type, for typed helpers: `dtype_of<float>` is `dtype::f32`.
template <class T>
inline constexpr dtype dtype_of = [] {
  static_assert(sizeof(T) == 0, "no ckpt dtype for this C++ type");
  return dtype::u8;
}();
template <>
inline constexpr dtype dtype_of<bool> = dtype::bool_;
template <>
inline constexpr dtype dtype_of<std::int8_t> = dtype::i8;
template <>
inline constexpr dtype dtype_of<std::int16_t> = dtype::i16;
template <>
inline constexpr dtype dtype_of<std::int32_t> = dtype::i32;
template <>
inline constexpr dtype dtype_of<std::int64_t> = dtype::i64;
template <>
inline constexpr dtype dtype_of<std::uint8_t> = dtype::u8;
template <>
inline constexpr dtype dtype_of<std::uint16_t> = dtype::u16;
template <>
inline constexpr dtype dtype_of<std::uint32_t> = dtype::u32;
template <>
inline constexpr dtype dtype_of<std::uint64_t> = dtype::u64;
template <>
inline constexpr dtype dtype_of<float> = dtype::f32;
template <>
inline constexpr dtype dtype_of<double> = dtype::f64;

/// Storage types for the dtypes C++ has no type for: the element's bits, nothing more, so that
/// the typed helpers (`array::borrow(std::span<T>)`, `as<T>()`, `dtype_of<T>`) work for them.
/// They do no arithmetic: convert with the framework that produced the data.
struct bfloat16 {
  std::uint16_t bits = 0;
  friend bool operator==(bfloat16, bfloat16) = default;
};
struct float16 {
  std::uint16_t bits = 0;
  friend bool operator==(float16, float16) = default;
};
struct float8_e4m3 {
  std::uint8_t bits = 0;
  friend bool operator==(float8_e4m3, float8_e4m3) = default;
};
struct float8_e5m2 {
  std::uint8_t bits = 0;
  friend bool operator==(float8_e5m2, float8_e5m2) = default;
};
static_assert(sizeof(bfloat16) == 2 && sizeof(float16) == 2 && sizeof(float8_e4m3) == 1 &&
              sizeof(float8_e5m2) == 1);
template <>
inline constexpr dtype dtype_of<bfloat16> = dtype::bf16;
template <>
inline constexpr dtype dtype_of<float16> = dtype::f16;
template <>
inline constexpr dtype dtype_of<float8_e4m3> = dtype::f8_e4m3;
template <>
inline constexpr dtype dtype_of<float8_e5m2> = dtype::f8_e5m2;

}  // namespace ckpt
