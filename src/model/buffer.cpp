#include <ckpt/buffer.hpp>

#include <cstdlib>
#include <new>
#include <stdexcept>
#include <utility>

namespace ckpt {

aligned_buffer::aligned_buffer(std::size_t size, std::size_t alignment)
    : size_(size), alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    throw std::invalid_argument("aligned_buffer: alignment must be a power of two");
  }
  capacity_ = align_up(size, alignment);
  if (capacity_ == 0) return;
  data_ = static_cast<std::byte*>(std::aligned_alloc(alignment, capacity_));
  if (data_ == nullptr) throw std::bad_alloc();
}

aligned_buffer::aligned_buffer(aligned_buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      capacity_(std::exchange(o.capacity_, 0)),
      alignment_(o.alignment_) {}

aligned_buffer& aligned_buffer::operator=(aligned_buffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    capacity_ = std::exchange(o.capacity_, 0);
    alignment_ = o.alignment_;
  }
  return *this;
}

aligned_buffer::~aligned_buffer() {
  std::free(data_);
}

void aligned_buffer::resize(std::size_t n) {
  if (n > capacity_) throw std::length_error("aligned_buffer::resize beyond capacity");
  size_ = n;
}

}  // namespace ckpt
