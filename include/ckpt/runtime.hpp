// ckpt/runtime.hpp - the threads, IO engine and staging memory that save and load run on.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/io.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <memory>

namespace ckpt {

namespace detail {
struct access;  // the library's own way in (src/pipeline/runtime_impl.hpp)
}

struct runtime_options {
  io::engine_options io;
  /// Threads that encode, checksum and decode chunks. 0: one per core.
  unsigned cpu_threads = 0;
  /// Bytes of staging memory (encoded chunks waiting to be written, chunks read and waiting to
  /// be decoded) a runtime may hold at once. It bounds peak memory beyond the tree itself. A
  /// save of borrowed leaves reaches `staged` without waiting for the disk only when its
  /// encoded tree fits in this budget. 0: a quarter of physical memory, at most 8 GiB.
  std::uint64_t staging_budget = 0;
  /// Nice value of the threads that encode a save after `staged` (a second pool of
  /// `cpu_threads`), so that they yield the cores to the training step. Capture (before
  /// `staged`), decoding and verifying run at the process's priority. 0: no change.
  int cpu_nice = 10;
  /// Differential saves learn from the kernel which chunks of the leaves' memory were written
  /// since the last save looked at them, instead of hashing every chunk: an unchanged chunk of
  /// a borrowed leaf then costs neither a read nor a copy before `staged`. Linux 6.7 or later
  /// (userfaultfd write protection, asynchronous mode, and PAGEMAP_SCAN); elsewhere saves hash
  /// as before (tracks_writes() says which). Leaves of at least 1 MiB are tracked. The price:
  /// the first write to each page after a save is a minor fault (about a microsecond), so it
  /// pays where most of the tree stays unchanged between saves (fine-tuning, frozen layers),
  /// not where every byte changes. Leaves the tracking sees: memory written by this process's
  /// threads or by the kernel on its behalf (read(2), O_DIRECT and io_uring reads, a load in
  /// place, madvise). Not seen: devices writing pinned pages (DMA) and other processes writing
  /// shared memory; do not save such memory from a tracking runtime.
  bool track_writes = false;
};

/// Owns one IO engine, a CPU thread pool, the pipeline thread that runs save/load coroutines
/// and a pool of staging buffers reused across saves (so that memory is not faulted in anew for
/// every checkpoint). Thread-safe. Create one per process (or use `global()`). Saves and loads
/// hold a reference while they run, so dropping yours early is safe; the threads are joined by
/// whoever drops the last reference (or, when that is one of the runtime's own threads, by a
/// short-lived thread started for it).
class runtime {
 public:
  static result<std::shared_ptr<runtime>> create(const runtime_options& options = {});
  /// A runtime over a given engine (e.g. one built over a fault-injecting backend);
  /// `options.io` is ignored.
  static result<std::shared_ptr<runtime>> create(std::shared_ptr<io::engine> engine,
                                                 const runtime_options& options = {});
  /// A process-wide runtime with default options, created on first use. Throws std::system_error
  /// when it cannot be created (no IO backend works at all).
  static const std::shared_ptr<runtime>& global();
  ~runtime();

  /// The executor of the pipeline thread.
  boost::asio::any_io_executor executor() const;
  io::engine& io();
  std::uint64_t staging_budget() const noexcept;
  unsigned cpu_threads() const noexcept;
  /// Whether runtime_options::track_writes took effect (the kernel can track writes).
  bool tracks_writes() const noexcept;

 private:
  friend struct detail::access;
  struct impl;
  explicit runtime(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace ckpt
