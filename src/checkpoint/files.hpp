// The one reader of a checkpoint's small files: COMMIT, index.json, metadata.json, job.json,
// or a sharded checkpoint's COMMIT, sharded-index.json, metadata.json and job.json. Every read
// goes through the io engine. Problems go to a sink: load stops at the first (and reports it as
// an error), verify and ckpt-inspect collect them all. The caps are the format's (index.hpp,
// sharded.hpp), the same ones the writer checks before it commits. Internal header.
#pragma once

#include "format/index.hpp"
#include "format/sharded.hpp"

#include <ckpt/error.hpp>
#include <ckpt/io.hpp>
#include <ckpt/runtime.hpp>
#include <ckpt/verify.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt::checkpoint {

/// COMMIT's cap, and metadata.json's and job.json's.
inline constexpr std::uint64_t max_commit_file = 1ull << 20;
inline constexpr std::uint64_t max_small_file = 1ull << 30;

/// The most bytes a reader accepts in the small file `name` of a checkpoint directory: COMMIT
/// max_commit_file, index.json and sharded-index.json their parsers' max_index_bytes, any other
/// (metadata.json, job.json) max_small_file. The readers here read with these caps, and
/// commit() refuses, before anything is visible, a file over its cap: one set of caps for both.
std::uint64_t small_file_cap(std::string_view name) noexcept;

struct checkpoint_files {
  std::string where;               ///< the checkpoint's path, for messages
  io::file dir;                    ///< the directory, open when asked to keep it (else fd -1)
  bool has_commit_file = false;    ///< a file named COMMIT exists
  std::uint64_t commit_bytes = 0;  ///< COMMIT's size and checksum (when read)
  std::uint64_t commit_xxh3 = 0;
  std::optional<format::commit_marker> commit;  ///< COMMIT parsed
  std::optional<format::index> index;           ///< index.json matched COMMIT and parsed
  std::optional<boost::json::object> metadata;  ///< metadata.json matched COMMIT and parsed
  std::optional<boost::json::object> job;       ///< job.json, when recorded, matched and parsed
  /// A sharded checkpoint's COMMIT and sharded-index.json (instead of commit and index).
  std::optional<format::sharded_commit> sharded_commit;
  std::optional<format::sharded_index> sharded_index;
  /// Every problem found (only the first in stop_at_first mode)...
  std::vector<verify_problem> problems;
  /// ... and the first one as the error a load reports (code and full message).
  std::optional<error> first_error;

  /// A checkpoint by FORMAT.md's definition (and its index parses): an ordinary one, or a
  /// sharded one (whose rank checkpoints are not looked at here).
  bool committed() const noexcept {
    return ((commit && (index || !index_read)) || (sharded_commit && sharded_index)) && metadata &&
           problems.empty();
  }
  bool sharded() const noexcept { return sharded_commit.has_value(); }
  /// The first problem as an error (errc::not_committed, errc::corrupt, errc::limit_exceeded,
  /// errc::unsupported_version, ...), for callers that need a sound checkpoint.
  error first_problem() const;

  bool index_read = true;  ///< index.json was asked for (see read_options::index)
};

struct read_options {
  bool index = true;           ///< read and parse index.json (a sharded index is always read)
  bool stop_at_first = false;  ///< return at the first problem (load) instead of collecting all
  bool keep_dir = false;       ///< leave `dir` open for the caller (who closes it)
};

/// Reads and checks the small files of the checkpoint directory `dir`. Fails only when `dir`
/// cannot be opened (errc::not_found when missing); every other problem goes to `problems`.
boost::asio::awaitable<result<checkpoint_files>> read_files(io::engine& io,
                                                            std::filesystem::path dir,
                                                            read_options options = {});

/// The same from a thread that is not one of the runtime's (null: the global runtime).
result<checkpoint_files> read_files_blocking(const std::filesystem::path& dir,
                                             read_options options = {},
                                             std::shared_ptr<runtime> rt = nullptr);

/// Reads a whole small file below `dir_fd` (at most `cap` bytes, else errc::limit_exceeded) with
/// parse padding reserved behind it, never following a symbolic link at the last component.
/// errc::not_found when it does not exist.
boost::asio::awaitable<result<std::string>> read_small_file(io::engine& io, int dir_fd,
                                                            std::string name, std::uint64_t cap);

/// The same for a path, from a thread that is not one of the runtime's.
result<std::string> read_small_file_blocking(const std::filesystem::path& file, std::uint64_t cap,
                                             std::shared_ptr<runtime> rt = nullptr);

}  // namespace ckpt::checkpoint
