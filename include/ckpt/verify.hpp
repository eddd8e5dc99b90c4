// ckpt/verify.hpp - checking a checkpoint end to end without loading it into memory.
//
// verify_checkpoint reads every file of a checkpoint directory and checks everything a loader
// would: the commit marker and the checksums of index.json, metadata.json and job.json, the
// index's rules (docs/FORMAT.md), the data files' sizes, and every chunk's XXH3 and
// decodability. Unlike a load it does not stop at the first problem: the report lists all of
// them (every bad chunk), each naming its file, leaf and chunk. Data is streamed: aligned
// extents are read through the runtime's IO engine, several in flight, checksummed and decoded
// into per-thread scratch memory on the runtime's CPU pool, so memory stays bounded by
// `verify_options::max_in_flight_bytes` whatever the checkpoint's size.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/runtime.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ckpt {

/// Progress of a running verification (data bytes are stored bytes of the data files).
struct verify_progress {
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
  std::uint64_t chunks_done = 0;
  std::uint64_t chunks_total = 0;
};

struct verify_options {
  /// Called after each extent has been checked, on the runtime's pipeline thread (keep it
  /// short; it must not block on the runtime). Empty: no progress reports.
  std::function<void(const verify_progress&)> progress;
  /// Read data files with O_DIRECT where the file system allows it (no page cache pollution).
  bool direct_io = true;
  /// Bytes of read buffers in flight at once (extents of up to 8 MiB each, 32 of them by
  /// default: enough to keep the disk busy, little enough to fault in quickly).
  std::uint64_t max_in_flight_bytes = 256ull << 20;
  /// The runtime to run on; null means runtime::global().
  std::shared_ptr<ckpt::runtime> runtime;
};

/// One problem found. Fields that do not apply are empty / -1.
struct verify_problem {
  /// The file it concerns, relative to the checkpoint ("COMMIT", "index.json",
  /// "data-00000.bin", ...).
  std::string file;
  /// The leaf path (docs/FORMAT.md "Paths"); empty when the problem is not about one leaf.
  std::string leaf;
  /// The chunk's index within its leaf, or -1.
  std::int64_t chunk = -1;
  /// The chunk's byte offset in `file`, or -1.
  std::int64_t offset = -1;
  /// What is wrong, expected versus found ("checksum mismatch (index says ..., data has ...)").
  std::string message;
};

struct verify_report {
  /// COMMIT parsed and the index, metadata and job files match it (the directory is a
  /// checkpoint, whatever the state of its data).
  bool committed = false;
  std::uint64_t files = 0;           ///< data files in the index
  std::uint64_t leaves = 0;          ///< leaves in the index
  std::uint64_t chunks = 0;          ///< chunks in the index
  std::uint64_t chunks_checked = 0;  ///< chunks read, checksummed and decoded without a problem
  std::uint64_t logical_bytes = 0;   ///< sum of the leaves' raw bytes (from the index)
  std::uint64_t stored_bytes = 0;    ///< sum of the data files' recorded sizes
  std::uint64_t bytes_read = 0;      ///< bytes read from the data files (aligned extents)
  /// Every problem, in the order: small files, data files, chunks (by file and offset).
  std::vector<verify_problem> problems;

  bool ok() const noexcept { return committed && problems.empty(); }
};

/// Verifies the checkpoint directory `path`. Succeeds with a report whenever the directory
/// could be examined (a damaged checkpoint is a report with problems, not an error); fails only
/// when `path` cannot be opened as a directory (`errc::not_found`, a system error) or the
/// runtime fails. Cancellation: none; the caller's memory is not touched.
boost::asio::awaitable<result<verify_report>> verify_checkpoint(std::filesystem::path path,
                                                                verify_options options = {});
/// The same from a thread that is not one of the runtime's.
result<verify_report> verify_checkpoint_blocking(std::filesystem::path path,
                                                 verify_options options = {});

}  // namespace ckpt
