// The small files of a checkpoint (COMMIT, index.json, metadata.json, job.json), read
// synchronously and checked like the load pipeline checks them, collecting every problem
// instead of stopping at the first. Used by verify.cpp and tools/inspect (internal header).
#pragma once

#include "format/index.hpp"
#include "format/sharded.hpp"

#include <ckpt/error.hpp>
#include <ckpt/verify.hpp>

#include <boost/json/object.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ckpt::detail {

struct checkpoint_files {
  bool has_commit_file = false;                 ///< a file named COMMIT exists
  std::optional<format::commit_marker> commit;  ///< COMMIT parsed
  std::optional<format::index> index;           ///< index.json matched COMMIT and parsed
  std::optional<boost::json::object> metadata;  ///< metadata.json matched COMMIT and parsed
  std::optional<boost::json::object> job;       ///< job.json, when recorded, matched and parsed
  /// A sharded checkpoint's COMMIT and sharded-index.json (instead of commit and index).
  std::optional<format::sharded_commit> sharded_commit;
  std::optional<format::sharded_index> sharded_index;
  std::vector<verify_problem> problems;

  /// A checkpoint by FORMAT.md's definition (and its index parses): an ordinary one, or a
  /// sharded one (whose rank checkpoints are not looked at here).
  bool committed() const noexcept {
    return ((commit && index) || (sharded_commit && sharded_index)) && metadata && problems.empty();
  }
  bool sharded() const noexcept { return sharded_commit.has_value(); }
};

/// Reads and checks the small files of the checkpoint directory `dir` (for a sharded checkpoint:
/// its COMMIT, metadata.json, job.json and sharded-index.json). Fails only when `dir`
/// cannot be opened (errc::not_found when missing); every other problem is recorded.
result<checkpoint_files> read_checkpoint_files(const std::filesystem::path& dir);

/// The first problem as an error (errc::not_committed or errc::corrupt), for callers that need
/// a sound checkpoint.
error first_problem(const std::filesystem::path& dir, const checkpoint_files& cf);

}  // namespace ckpt::detail

namespace ckpt::checkpoint {

/// Reads a whole small file (at most `max_bytes`, else errc::limit_exceeded), synchronously,
/// never following a symbolic link at the last component.
result<std::string> read_small_file(const std::filesystem::path& file, std::size_t max_bytes);

}  // namespace ckpt::checkpoint
