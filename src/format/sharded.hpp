// Sharded checkpoints: the global index (sharded-index.json) and the commit marker of a
// sharded checkpoint directory, in-memory model, writer and validating parser. Internal header;
// the contract is docs/FORMAT.md, "Sharded checkpoints".
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/dtype.hpp>
#include <ckpt/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::format {

inline constexpr std::uint32_t sharded_version_major = 1;
inline constexpr std::uint32_t sharded_version_minor = 0;
inline constexpr std::string_view sharded_index_file = "sharded-index.json";
inline constexpr std::string_view sharded_index_format = "ckpt-sharded-index";
inline constexpr std::string_view sharded_commit_format = "ckpt-sharded-commit";

/// "rank-00000", "rank-00001", ...: the ordinary checkpoint each rank writes.
std::string rank_dir_name(std::uint32_t rank);

/// One rank's checkpoint inside the sharded directory.
struct rank_entry {
  std::string dir;                 ///< plain directory name ("rank-00002")
  std::uint64_t commit_bytes = 0;  ///< exact size of that directory's COMMIT
  std::uint64_t commit_xxh3 = 0;   ///< XXH3-64 of that COMMIT
};

/// A region of a global array: per dimension an offset and an extent.
struct box {
  ckpt::shape offset;
  ckpt::shape extent;
  friend bool operator==(const box&, const box&) = default;
};

/// Where the bytes of one region of a global leaf are: leaf `leaf` (a path) of rank `rank`'s
/// checkpoint, an array of shape `where.extent`.
struct slice_entry {
  box where;
  std::uint32_t rank = 0;
  std::string leaf;
};

struct sharded_leaf_entry {
  std::string path;  ///< the global leaf's path
  ckpt::dtype dtype = ckpt::dtype::f32;
  ckpt::shape shape;  ///< the global shape
  bool replicated = false;
  std::uint64_t num_bytes = 0;  ///< of the global array (derived)
  std::vector<slice_entry> slices;
};

struct sharded_index {
  std::vector<rank_entry> ranks;
  std::vector<sharded_leaf_entry> leaves;
};

struct sharded_limits {
  std::uint64_t max_index_bytes = 1ull << 30;
  std::uint32_t max_ranks = 1u << 20;
  std::uint64_t max_leaves = 10'000'000;
  std::uint64_t max_slices = 50'000'000;
  std::uint32_t max_rank = 32;  ///< dimensions of a leaf
};

/// Volume of a box (element count); the caller guarantees it lies inside a valid shape.
std::uint64_t box_volume(const box& b) noexcept;
/// True when every extent is positive.
bool box_nonempty(const box& b) noexcept;
/// The intersection of `a` and `b` (same rank); false when it is empty.
bool box_intersect(const box& a, const box& b, box& out) noexcept;
/// "[0:250, 0:64]" (offset:end per dimension).
std::string box_to_string(const box& b);

/// Checks that the non-empty boxes lie inside `shape`, are pairwise disjoint and together
/// cover it exactly. `what` names the leaf in messages. errc::corrupt or invalid_argument
/// (`e`) naming the offending boxes.
result<void> check_partition(const ckpt::shape& shape, const std::vector<box>& boxes,
                             std::string_view what, errc e);

std::string encode_sharded_index(const sharded_index& ix);
/// Parses and validates: format and major version, caps, plain unique rank directory names,
/// known dtypes, overflow-checked shapes, unique leaf paths, slices inside their leaf with the
/// leaf's rank, ranks in range, and the slices of each leaf partitioning it exactly
/// (replicated leaves: exactly one slice, the whole array).
result<sharded_index> parse_sharded_index(std::string_view json, const sharded_limits& limits = {});

struct sharded_commit {
  std::uint64_t index_bytes = 0;
  std::uint64_t index_xxh3 = 0;
  std::uint64_t metadata_bytes = 0;
  std::uint64_t metadata_xxh3 = 0;
  bool has_job = false;
  std::uint64_t job_bytes = 0;
  std::uint64_t job_xxh3 = 0;
  std::uint64_t ranks = 0;
  std::uint64_t logical_bytes = 0;  ///< sum of the global leaves' bytes
  std::uint64_t stored_bytes = 0;   ///< sum of the ranks' data files
  std::uint64_t created_unix_ns = 0;
};

std::string encode_sharded_commit(const sharded_commit& m);
result<sharded_commit> parse_sharded_commit(std::string_view json);
/// True when `commit_text` (a COMMIT file's contents) names the sharded format: a cheap sniff
/// that tells a sharded checkpoint from an ordinary one before parsing either.
bool is_sharded_commit_text(std::string_view commit_text) noexcept;

}  // namespace ckpt::format
