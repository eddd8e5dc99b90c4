// ckpt/array.hpp - shapes and array leaves.
#pragma once

#include <ckpt/buffer.hpp>
#include <ckpt/dtype.hpp>
#include <ckpt/error.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ckpt {

/// Extents of an n-d array, outermost first. `{}` is a 0-d scalar (one element).
using shape = std::vector<std::int64_t>;

/// Number of elements; negative extents are `errc::invalid_argument`, a product that overflows
/// 63 bits is `errc::shape_overflow`.
result<std::uint64_t> element_count(std::span<const std::int64_t> extents);
/// Element count x dtype size, overflow-checked the same way.
result<std::uint64_t> byte_size(dtype t, std::span<const std::int64_t> extents);
/// "[640, 2560]"
std::string shape_to_string(std::span<const std::int64_t> extents);

/// How a leaf holds its bytes, which decides what a save must do before it reports `staged`.
enum class ownership : std::uint8_t {
  /// A view of memory the caller owns and may change after `staged`: a save copies or encodes
  /// it before `staged`. The caller keeps the memory alive until `staged`.
  borrowed,
  /// A buffer this array owns (e.g. a loaded leaf). Mutable through `mutable_bytes()`, so a save
  /// captures it like a borrowed one.
  owned,
  /// A reference-counted buffer the caller promises never to change again: a save keeps a
  /// reference and captures nothing (zero copy), so `staged` does not wait for it.
  shared,
};

/// A leaf of a tree: dtype, shape and the bytes (C order, native little-endian). Copying an
/// array copies the view/reference, never the bytes.
class array {
 public:
  /// An empty f32 scalar placeholder with no bytes; only useful as a target of assignment.
  array() = default;

  /// A read-only view of caller memory. `bytes.size()` must equal the shape's byte size.
  static result<array> borrow(dtype t, ckpt::shape s, std::span<const std::byte> bytes);
  /// A writable view of caller memory: also usable as a restore destination.
  static result<array> borrow(dtype t, ckpt::shape s, std::span<std::byte> bytes);
  /// Typed views. `data.size()` must equal the shape's element count.
  template <class T>
  static result<array> borrow(std::span<T> data, ckpt::shape s) {
    if constexpr (std::is_const_v<T>) {
      return borrow(dtype_of<std::remove_const_t<T>>, std::move(s), std::as_bytes(data));
    } else {
      return borrow(dtype_of<T>, std::move(s), std::as_writable_bytes(data));
    }
  }
  /// An immutable shared buffer; `owner` keeps `bytes` alive.
  static result<array> share(dtype t, ckpt::shape s, std::shared_ptr<const void> owner,
                             std::span<const std::byte> bytes);
  /// A zero-filled owned array (aligned_buffer::for_array: on a page from 64 KiB on, 64 bytes
  /// below). Throws std::bad_alloc; errors on bad shapes.
  static result<array> zeros(dtype t, ckpt::shape s);
  /// An owned array taking over `buffer` (`buffer.size()` must equal the byte size).
  static result<array> adopt(dtype t, ckpt::shape s, aligned_buffer buffer);

  /// A shape-only description (no bytes) for restore templates: "a leaf of this dtype and
  /// shape goes here; allocate it".
  static result<array> spec(dtype t, ckpt::shape s);

  ckpt::dtype dtype() const noexcept { return dtype_; }
  const ckpt::shape& shape() const noexcept { return shape_; }
  ckpt::ownership ownership() const noexcept { return ownership_; }
  std::uint64_t num_elements() const noexcept { return elements_; }
  std::uint64_t num_bytes() const noexcept { return bytes_size_; }
  /// True for a `spec` (no bytes attached).
  bool is_spec() const noexcept { return data_ == nullptr && bytes_size_ > 0; }
  /// True when the bytes may be written through `mutable_bytes()`.
  bool is_writable() const noexcept { return writable_; }

  std::span<const std::byte> bytes() const noexcept { return {data_, data_ ? bytes_size_ : 0}; }
  /// The writable bytes; empty for read-only views and shared arrays.
  std::span<std::byte> mutable_bytes() const noexcept {
    return writable_ ? std::span<std::byte>{data_, bytes_size_} : std::span<std::byte>{};
  }
  /// Typed read access; throws std::logic_error on a dtype mismatch (a programming error).
  template <class T>
  std::span<const T> as() const {
    check_element_type(dtype_of<T>);
    return {reinterpret_cast<const T*>(data_), data_ ? elements_ : 0};
  }
  template <class T>
  std::span<T> as_mutable() const {
    check_element_type(dtype_of<T>);
    auto b = mutable_bytes();
    return {reinterpret_cast<T*>(b.data()), b.empty() ? 0 : elements_};
  }
  /// The keep-alive of shared and owned arrays (null for borrowed views).
  const std::shared_ptr<const void>& owner() const noexcept { return owner_; }

  /// Same dtype, shape and bytes.
  friend bool operator==(const array& a, const array& b) noexcept;
  /// "f32[640, 2560]"
  std::string describe() const;

 private:
  static result<array> make(ckpt::dtype t, ckpt::shape s, std::byte* data, std::size_t size);
  void check_element_type(ckpt::dtype t) const;

  ckpt::dtype dtype_ = ckpt::dtype::f32;
  ckpt::ownership ownership_ = ownership::borrowed;
  bool writable_ = false;
  ckpt::shape shape_;
  std::uint64_t elements_ = 1;
  std::uint64_t bytes_size_ = 0;
  std::byte* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace ckpt
