// Which chunks of the caller's memory were written since a save last looked, from the kernel
// rather than by reading them (runtime_options::track_writes): userfaultfd write-protection in
// asynchronous mode (UFFD_FEATURE_WP_ASYNC) and the PAGEMAP_SCAN ioctl, Linux 6.7 and later.
// A look at a leaf's pages reports the pages written since the previous look and protects them
// again; a write to a protected page is resolved by the kernel (a minor fault, no signal, no
// thread of ours), and marks the page written. Kernel writes into the pages (read(2), O_DIRECT
// and io_uring reads, a load into place) and pages dropped by madvise count as written; a
// mapping replaced since the last look is not tracked and is looked at afresh. Device DMA into
// pinned pages is not seen: such memory must not be tracked.
//
// The tracker remembers the hash a save computed for a chunk of tracked memory. A look forgets
// every hash whose range has a written page, so a hash it still holds is of the bytes that are
// in memory now, without reading them. A hash is remembered only while no look happened since
// the save's own looks (its epoch): a save may hash its staging copy after `staged`, when the
// memory may have changed and a later save looked at it already. Thread-safe.
#pragma once

#include "format/codec.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>

namespace ckpt::detail {

/// Leaves smaller than this are hashed, not tracked (each tracked range may split a mapping).
inline constexpr std::uint64_t track_min = 1ull << 20;

class write_tracker {
 public:
  /// Null where the kernel cannot track writes this way (or the process may not use
  /// userfaultfd).
  static std::unique_ptr<write_tracker> create();
  ~write_tracker();
  write_tracker(const write_tracker&) = delete;
  write_tracker& operator=(const write_tracker&) = delete;

  /// Looks at the pages under `bytes`: forgets the hashes of ranges with a page written since
  /// the previous look (all of them the first time: the memory is registered then), and
  /// protects the pages again. False: this memory cannot be tracked (hash it, remember nothing).
  bool look(std::span<const std::byte> bytes);
  /// Counts looks: a save takes it after its own looks.
  std::uint64_t epoch() const;
  /// The hash remembered for exactly [p, p + n), if no page under it was written.
  std::optional<format::raw_hash> known(const std::byte* p, std::uint64_t n) const;
  /// Remembers the hash of [p, p + n), computed from the bytes a look at `epoch` saw (a save's
  /// capture of them, or the leaf itself under the borrowed-leaf contract), unless another look
  /// happened since.
  void remember(const std::byte* p, std::uint64_t n, format::raw_hash h, std::uint64_t epoch);

 private:
  write_tracker(int uffd, int pagemap) : uffd_(uffd), pagemap_(pagemap) {}
  void forget(std::uintptr_t start, std::uintptr_t end);  // (m_ held)

  int uffd_ = -1;
  int pagemap_ = -1;
  mutable std::mutex m_;
  std::map<std::pair<std::uintptr_t, std::uint64_t>, format::raw_hash> hashes_;
  std::uint64_t longest_ = 0;  // the longest remembered range, to find overlaps
  std::uint64_t epoch_ = 0;
};

/// What one save holds of a tracking runtime: the tracker and the epoch of its looks.
struct tracked_save {
  write_tracker* tracker = nullptr;
  std::uint64_t epoch = 0;
};

}  // namespace ckpt::detail
