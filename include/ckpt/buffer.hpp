// ckpt/buffer.hpp - owning, aligned, move-only byte buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ckpt {

/// A heap buffer whose address and capacity are multiples of `alignment()` (4 KiB by default),
/// as O_DIRECT IO requires. Move-only; frees its memory on destruction. `size()` is the usable
/// length the owner asked for, `capacity()` that length rounded up to the alignment (the bytes
/// in between may be written, e.g. as O_DIRECT padding).
class aligned_buffer {
 public:
  static constexpr std::size_t default_alignment = 4096;
  /// The memory ckpt allocates for an array (array::zeros, a load's fresh arrays) starts on a
  /// page from this many bytes on: the O_DIRECT paths write raw chunks of 64 KiB or more straight
  /// from a leaf and read them straight into one. A smaller array gets `small_alignment`: those
  /// paths never take it, and a page each would cost up to two pages of heap per array.
  static constexpr std::size_t page_aligned_min = 64 * 1024;
  static constexpr std::size_t small_alignment = 64;
  /// The alignment of an array of `size` bytes, by the rule above.
  static constexpr std::size_t array_alignment(std::size_t size) noexcept {
    return size >= page_aligned_min ? default_alignment : small_alignment;
  }
  /// `size` bytes (uninitialised) aligned for an array: aligned_buffer(size,
  /// array_alignment(size)).
  static aligned_buffer for_array(std::size_t size) {
    return aligned_buffer(size, array_alignment(size));
  }

  aligned_buffer() noexcept = default;
  /// Allocates `size` bytes (uninitialised). Throws std::bad_alloc when memory is exhausted.
  /// `alignment` must be a power of two.
  explicit aligned_buffer(std::size_t size, std::size_t alignment = default_alignment);
  aligned_buffer(aligned_buffer&& other) noexcept;
  aligned_buffer& operator=(aligned_buffer&& other) noexcept;
  aligned_buffer(const aligned_buffer&) = delete;
  aligned_buffer& operator=(const aligned_buffer&) = delete;
  ~aligned_buffer();

  std::byte* data() noexcept { return data_; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t alignment() const noexcept { return alignment_; }
  bool empty() const noexcept { return size_ == 0; }

  /// Changes the usable length within the capacity (no reallocation; `n <= capacity()`).
  void resize(std::size_t n);

  std::span<std::byte> span() noexcept { return {data_, size_}; }
  std::span<const std::byte> span() const noexcept { return {data_, size_}; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  std::size_t alignment_ = default_alignment;
};

/// Rounds `n` up to a multiple of the power of two `alignment`.
constexpr std::size_t align_up(std::size_t n, std::size_t alignment) noexcept {
  return (n + alignment - 1) & ~(alignment - 1);
}
/// True when `p` is a multiple of the power of two `alignment`.
inline bool is_aligned(const void* p, std::size_t alignment) noexcept {
  return (reinterpret_cast<std::uintptr_t>(p) & (alignment - 1)) == 0;
}

}  // namespace ckpt
