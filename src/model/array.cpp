#include <ckpt/array.hpp>

#include <cstring>
#include <limits>
#include <stdexcept>

namespace ckpt {
namespace {
constexpr std::uint64_t max_size =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
}

std::string shape_to_string(std::span<const std::int64_t> extents) {
  std::string s = "[";
  for (std::size_t i = 0; i < extents.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(extents[i]);
  }
  return s + "]";
}

result<std::uint64_t> element_count(std::span<const std::int64_t> extents) {
  std::uint64_t n = 1;
  bool overflow = false;
  for (std::int64_t e : extents) {
    if (e < 0) {
      return fail(errc::invalid_argument, "negative extent in shape " + shape_to_string(extents));
    }
    const auto u = static_cast<std::uint64_t>(e);
    // Keep scanning after an overflow: a 0 extent wins.
    if (__builtin_mul_overflow(n, u, &n) || n > max_size) overflow = true;
  }
  if (overflow) {
    for (std::int64_t e : extents) {
      if (e == 0) return std::uint64_t{0};
    }
    return fail(errc::shape_overflow,
                "shape " + shape_to_string(extents) + " has more than 2^63 elements");
  }
  return n;
}

namespace {
/// Bytes of `n` = element_count(extents) elements of `t`, overflow-checked.
result<std::uint64_t> bytes_of(dtype t, std::span<const std::int64_t> extents, std::uint64_t n) {
  const std::uint64_t sz = dtype_size(t);
  if (n > max_size / sz) {
    return fail(errc::shape_overflow, std::string(dtype_name(t)) + shape_to_string(extents) +
                                          " is larger than 2^63 bytes");
  }
  return n * sz;
}
}  // namespace

result<std::uint64_t> byte_size(dtype t, std::span<const std::int64_t> extents) {
  CKPT_TRY(std::uint64_t n, element_count(extents));
  return bytes_of(t, extents, n);
}

result<array> array::make(ckpt::dtype t, ckpt::shape s, std::byte* data, std::size_t size) {
  CKPT_TRY(std::uint64_t n, element_count(s));
  CKPT_TRY(std::uint64_t bytes, bytes_of(t, s, n));  // (not byte_size: n is known)
  if (data != nullptr || size != 0) {
    if (size != bytes) {
      return fail(errc::size_mismatch, std::string(dtype_name(t)) + shape_to_string(s) + " needs " +
                                           std::to_string(bytes) + " bytes, got " +
                                           std::to_string(size));
    }
  }
  array a;
  a.dtype_ = t;
  a.shape_ = std::move(s);
  a.elements_ = n;
  a.bytes_size_ = bytes;
  a.data_ = data;
  return a;
}

result<array> array::borrow(ckpt::dtype t, ckpt::shape s, std::span<const std::byte> bytes) {
  CKPT_TRY(array a, make(t, std::move(s), const_cast<std::byte*>(bytes.data()), bytes.size()));
  if (a.bytes_size_ > 0 && bytes.data() == nullptr) {
    return fail(errc::invalid_argument, "borrow: null data for " + a.describe());
  }
  a.ownership_ = ownership::borrowed;
  a.writable_ = false;
  return a;
}

result<array> array::borrow(ckpt::dtype t, ckpt::shape s, std::span<std::byte> bytes) {
  CKPT_TRY(array a, borrow(t, std::move(s), std::span<const std::byte>(bytes)));
  a.writable_ = true;
  return a;
}

result<array> array::share(ckpt::dtype t, ckpt::shape s, std::shared_ptr<const void> owner,
                           std::span<const std::byte> bytes) {
  CKPT_TRY(array a, borrow(t, std::move(s), bytes));
  if (!owner) return fail(errc::invalid_argument, "share: null owner for " + a.describe());
  a.ownership_ = ownership::shared;
  a.owner_ = std::move(owner);
  return a;
}

result<array> array::adopt(ckpt::dtype t, ckpt::shape s, aligned_buffer buffer) {
  auto owned = std::make_shared<aligned_buffer>(std::move(buffer));
  CKPT_TRY(array a, make(t, std::move(s), owned->data(), owned->size()));
  a.ownership_ = ownership::owned;
  a.writable_ = true;
  a.owner_ = std::move(owned);
  return a;
}

result<array> array::zeros(ckpt::dtype t, ckpt::shape s) {
  CKPT_TRY(std::uint64_t bytes, byte_size(t, s));
  auto buf = aligned_buffer::for_array(bytes);
  if (bytes) std::memset(buf.data(), 0, bytes);
  return adopt(t, std::move(s), std::move(buf));
}

result<array> array::spec(ckpt::dtype t, ckpt::shape s) {
  CKPT_TRY(array a, make(t, std::move(s), nullptr, 0));
  return a;
}

void array::check_element_type(ckpt::dtype t) const {
  if (t == dtype_) return;
  // The raw bits of a same-size type may be read through an unsigned view (bf16 as uint16_t).
  bool raw_bits = (t == dtype::u8 || t == dtype::u16 || t == dtype::u32 || t == dtype::u64) &&
                  dtype_size(t) == dtype_size(dtype_);
  if (!raw_bits) {
    throw std::logic_error("ckpt::array::as: element type " + std::string(dtype_name(t)) +
                           " does not match " + describe());
  }
}

std::string array::describe() const {
  return std::string(dtype_name(dtype_)) + shape_to_string(shape_);
}

bool operator==(const array& a, const array& b) noexcept {
  if (a.dtype_ != b.dtype_ || a.shape_ != b.shape_) return false;
  auto x = a.bytes(), y = b.bytes();
  return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size()) == 0);
}

}  // namespace ckpt
