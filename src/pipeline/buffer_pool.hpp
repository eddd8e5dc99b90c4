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
  aligned_buffer take(std::size_t n) { return take(n, false); }

  /// take() with its pages in: a buffer allocated now has the pages of its first `n` bytes
  /// written once, in order, before it is returned (a pooled one already has them). For a buffer
  /// that an O_DIRECT read fills first: left to the read, its pages are faulted in by the read's
  /// page pinning on the submitting thread (~2 ms per 4 MiB here) and come out scattered, so that
  /// virtio-blk splits the read at its 254 segments into 1 MiB requests; touched first, a
  /// fresh-process load of the small workload (20,000 leaves, all through staging) ran 0.35-0.41 s
  /// median against 0.51-0.54 s (2 x 10 alternated runs, both orders), the others the same. And
  /// for reserve_staging, which faults in a start_save's buffers ahead of its `staged`.
  aligned_buffer take_faulted(std::size_t n) { return take(n, true); }

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
  aligned_buffer take(std::size_t n, bool touch_new) {
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
    if (touch_new) {  // (the bytes asked for: a small extent's buffer stays mostly unfaulted)
      for (std::size_t k = 0; k < n; k += 4096)
        b.data()[k] = std::byte{0};
    }
    b.resize(n);
    return b;
  }

  std::mutex m_;
  std::uint64_t max_cached_;
  std::uint64_t cached_ = 0;
  std::map<std::size_t, std::vector<aligned_buffer>> free_;
};

}  // namespace ckpt::detail
