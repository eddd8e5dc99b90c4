// ckpt/save.hpp - saving a tree and its metadata as one checkpoint directory.
//
// A save is a pipeline: flatten -> chunk -> encode + checksum (thread pool) -> io_uring writes
// into a few data files -> fsync -> metadata, job, index -> commit marker -> directory fsync ->
// atomic rename -> parent fsync (docs/FORMAT.md). It has two milestones:
//  - staged: every byte of the tree has been captured. From here the caller may change its
//    borrowed arrays. Shared (immutable) leaves are referenced, never copied before staged.
//  - committed: the checkpoint is durable and visible under its final name. A crash or a failure
//    before this leaves every existing checkpoint untouched and no visible partial one.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/runtime.hpp>
#include <ckpt/tree.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace ckpt {

struct save_options {
  /// Leaves are split into chunks of at most this many raw bytes; small leaves are packed
  /// together into write units of this size.
  std::uint64_t chunk_bytes = 4ull << 20;
  /// Data files written in parallel. 0 (the default): one per 64 MiB of the tree's bytes, at
  /// most 4 (a 36 MiB save writes one file: 9-10 % faster than into four on our test VM);
  /// any other value: that many (at most one per write unit).
  unsigned data_files = 0;
  /// Replace an existing committed checkpoint at the same path. The swap is atomic: the old one
  /// stays intact and visible until the new one commits, and is deleted before the save
  /// completes (a failure to delete it leaves a `.<name>.trash-*` directory that
  /// store::cleanup_stale removes; the save still succeeds).
  bool overwrite = false;
  /// Record whole 4 KiB pages of zeros or of one repeated value as fill runs (format 1.2: not
  /// written, not read back; a checkpoint with them needs a 1.2 reader) and try LZ4 per chunk,
  /// keeping it only where it pays (see min_ratio); false stores every byte raw.
  bool compress = true;
  /// Byte-shuffle floating-point chunks before LZ4.
  bool shuffle = true;
  /// Keep a compressed chunk only if raw/stored >= min_ratio (judged on samples first). The
  /// default suits local NVMe-class disks: LZ4 with a byte shuffle encodes at ~0.8 GB/s per
  /// core, so saving 10-20 % of the bytes (Gaussian f32/bf16) costs more time than it saves,
  /// while sparse or repetitive data (ratios of 2..100) still compresses. On slow storage
  /// (network file systems, < 500 MB/s) a lower value such as 1.1 pays.
  double min_ratio = 1.5;
  /// Open data files with O_DIRECT where the file system allows it.
  bool direct_io = true;
  /// A differential save: a committed checkpoint whose chunks this one may share. A chunk whose
  /// raw bytes have the same XXH3-128 as the base's chunk at the same place (leaf path, dtype,
  /// chunk index and raw range; same chunk_bytes) is not written: the checkpoint hard-links the
  /// base's data file that holds it and points into it (docs/FORMAT.md "Differential
  /// checkpoints"), so deleting the base never breaks it. The base must be on the same file
  /// system. A borrowed leaf's unchanged chunk is hashed before `staged`, never copied. Empty:
  /// every chunk is written.
  std::filesystem::path base;
  /// When `base` cannot be used (missing, not a committed checkpoint, sharded, damaged index,
  /// another file system), save in full instead of failing; save_stats::base_note says why.
  /// (A sharded save takes a sharded base: see sharded_save_options::local.)
  /// The job layer sets it for its default base (the latest checkpoint).
  bool base_optional = false;
  /// Record each chunk's XXH3-128 in the index, what a later differential save compares
  /// against (about one extra hash pass over memory). Required with `base`.
  bool hash_chunks = true;
  /// Contents of job.json (the job layer's slot: spec and config); absent when empty.
  std::optional<boost::json::object> job;
  /// The runtime to run on; null means runtime::global().
  std::shared_ptr<ckpt::runtime> runtime;
};

/// Per-stage timings of one save (seconds since the save started, and totals).
struct save_stats {
  std::uint64_t logical_bytes = 0;  ///< sum of the leaves' bytes
  std::uint64_t stored_bytes = 0;   ///< bytes in data files (after encoding and padding)
  std::uint64_t chunks = 0;
  std::uint64_t leaves = 0;
  /// Bytes written straight from the leaves' memory, without a staging copy (raw, page-aligned
  /// chunks of shared leaves, and of every leaf in a save whose caller waits for the commit).
  std::uint64_t direct_bytes = 0;
  /// A differential save: raw bytes of the chunks shared with the base (not written), and in
  /// how many chunks; `base_note` says why a base was not used (base_optional).
  std::uint64_t shared_bytes = 0;
  std::uint64_t shared_chunks = 0;
  /// Of shared_bytes, those a tracking runtime (runtime_options::track_writes) knew unchanged
  /// without reading them.
  std::uint64_t untouched_bytes = 0;
  std::string base_note;
  double staged_s = 0;     ///< start -> staged
  double capture_s = 0;    ///< CPU seconds copying borrowed/owned bytes to staging (summed)
  double encode_s = 0;     ///< CPU seconds spent encoding + checksumming (summed over threads)
  double written_s = 0;    ///< start -> last data write completed
  double fsync_s = 0;      ///< data-file fsyncs (wall)
  double commit_s = 0;     ///< metadata, index, marker, dir fsyncs, rename (wall)
  double committed_s = 0;  ///< start -> committed
};

/// The handle of a save in flight. Copyable (all copies share the save). All member functions
/// are thread-safe. Dropping every handle does not cancel the save.
class save_handle {
 public:
  struct state;

  /// Completes when every byte is captured (or the save failed). Resumes on the awaiting
  /// coroutine's executor.
  boost::asio::awaitable<result<void>> staged() const;
  /// Completes when the checkpoint is durable and visible (or the save failed).
  boost::asio::awaitable<result<void>> committed() const;
  /// Blocking forms, for callers that do not run Asio. Do not call from the runtime's threads.
  result<void> wait_staged() const;
  result<void> wait_committed() const;
  /// Blocks until the save is done (committed or failed) or `timeout` passed; true when done.
  bool wait_done_for(std::chrono::steady_clock::duration timeout) const;
  bool is_staged() const noexcept;
  bool is_done() const noexcept;
  /// Asks the save to stop. Before the final rename it aborts with `errc::cancelled` and
  /// removes its temporary directory; after it, the save completes normally.
  void cancel() const noexcept;
  /// Timings so far (complete once committed).
  save_stats stats() const;
  /// The checkpoint's final path.
  const std::filesystem::path& path() const noexcept;

 private:
  friend struct detail::access;
  explicit save_handle(std::shared_ptr<state> s) : state_(std::move(s)) {}
  std::shared_ptr<state> state_;
};

/// Starts saving `t` and `metadata` as the checkpoint directory `path` (its parent directories
/// are created). Returns at once; the handle tells when it is staged and committed. Borrowed
/// leaves must stay valid and unchanged until `staged`; shared leaves are kept alive by the
/// save. Errors (invalid tree, existing checkpoint without `overwrite`, IO failures) come
/// through the handle's awaits.
save_handle start_save(std::filesystem::path path, const tree& t, boost::json::object metadata,
                       save_options options = {});

/// Saves and waits for commit. Nothing is copied up front: raw page-aligned chunks are written
/// straight from the leaves' memory (the rest through a bounded staging window), so every leaf
/// of `t` must stay valid and unchanged until this completes. To change the leaves while the
/// checkpoint is written, use start_save and await `staged`. `t` is taken by value (its
/// structure, not the leaves' bytes), so a temporary tree may be passed to an awaitable that is
/// awaited later.
boost::asio::awaitable<result<save_stats>> save(std::filesystem::path path, tree t,
                                                boost::json::object metadata,
                                                save_options options = {});
/// Blocking form of save().
result<save_stats> save_blocking(std::filesystem::path path, const tree& t,
                                 boost::json::object metadata, save_options options = {});

/// Faults in, ahead of time, the staging memory that saves of trees like `t` (same leaves and
/// ownership) with `options` need, on `options.runtime` (or the global runtime), and keeps it
/// in the runtime's buffer pool. Without it the first saves copy borrowed leaves into freshly
/// mapped memory, several times slower than a memcpy. Bounded by the runtime's staging budget;
/// the memory stays with the runtime. Call it once at start-up. Returns the bytes reserved.
std::uint64_t reserve_staging(const tree& t, const save_options& options = {});

}  // namespace ckpt
