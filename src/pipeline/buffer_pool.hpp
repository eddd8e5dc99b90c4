// Staging buffers reused across saves and loads, so that memory is faulted in once and not
// for every checkpoint (on VMs whose freed memory returns to the host, touching fresh memory
// runs at a fraction of memcpy speed). Sizes are rounded up to 1 MiB classes. Thread-safe.
#pragma once

#include <ckpt/buffer.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace ckpt::detail {

class buffer_pool {
 public:
  /// Keeps at most `max_cached` bytes of idle buffers.
  explicit buffer_pool(std::uint64_t max_cached) : max_cached_(max_cached) {}

  static std::size_t size_class(std::size_t n) { return align_up(n, std::size_t{1} << 20); }

  /// A buffer with capacity >= n (size set to n).
  aligned_buffer take(std::size_t n) {
    std::size_t cls = size_class(n);
    {
      std::lock_guard l(m_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        aligned_buffer b = std::move(it->second.back());
        it->second.pop_back();
        cached_ -= cls;
        b.resize(n);
        return b;
      }
    }
    aligned_buffer b(cls);
    b.resize(n);
    return b;
  }

  void give(aligned_buffer b) {
    std::size_t cls = b.capacity();
    if (cls == 0 || cls != size_class(cls)) return;  // not one of ours: just free it
    std::lock_guard l(m_);
    if (cached_ + cls > max_cached_) return;
    cached_ += cls;
    b.resize(0);
    free_[cls].push_back(std::move(b));
  }

 private:
  std::mutex m_;
  std::uint64_t max_cached_;
  std::uint64_t cached_ = 0;
  std::map<std::size_t, std::vector<aligned_buffer>> free_;
};

}  // namespace ckpt::detail
