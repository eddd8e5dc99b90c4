// The checkpoint index and commit marker: in-memory model, writer and validating parser.
// Internal header; the contract is docs/FORMAT.md.
#pragma once

#include "format/codec.hpp"

#include <ckpt/array.hpp>
#include <ckpt/dtype.hpp>
#include <ckpt/error.hpp>
#include <ckpt/tree.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::format {

inline constexpr std::uint32_t version_major = 1;
inline constexpr std::uint32_t version_minor = 0;

/// File names inside a checkpoint directory.
inline constexpr std::string_view index_file = "index.json";
inline constexpr std::string_view metadata_file = "metadata.json";
inline constexpr std::string_view job_file = "job.json";
inline constexpr std::string_view commit_file = "COMMIT";
/// "data-00000.bin", "data-00001.bin", ...
std::string data_file_name(std::uint32_t i);

/// Bytes of readable padding a parser needs after the JSON text (simdjson's requirement).
inline constexpr std::size_t parse_padding = 64;

struct chunk_entry {
  std::uint64_t offset = 0;       ///< byte offset of the stored bytes in that file (any alignment)
  std::uint64_t stored_size = 0;  ///< bytes on disk
  std::uint64_t raw_size = 0;     ///< bytes after decoding
  std::uint64_t xxh3 = 0;         ///< XXH3-64 of the stored bytes
  std::uint32_t file = 0;         ///< index into index::files
  format::codec codec = format::codec::raw;
};

struct leaf_entry {
  std::string path;  ///< the leaf's tree path (escaped keys joined by '/')
  ckpt::dtype dtype = ckpt::dtype::f32;
  ckpt::shape shape;
  std::uint64_t num_bytes = 0;      ///< dtype size x elements
  std::vector<chunk_entry> chunks;  ///< in raw order; raw sizes sum to num_bytes
};

struct file_entry {
  std::string name;        ///< plain file name in the checkpoint directory
  std::uint64_t size = 0;  ///< exact size in bytes
};

struct index {
  std::vector<file_entry> files;
  std::vector<leaf_entry> leaves;  ///< in the tree's flatten() order
  /// The tree's structure: dict/list/None nodes, with `array::spec(dtype, shape)` leaves in the
  /// same order as `leaves`.
  ckpt::tree structure;
};

/// Caps a parser enforces before trusting an index (hostile input).
struct parse_limits {
  std::uint64_t max_index_bytes = 1ull << 30;
  std::uint64_t max_leaves = 10'000'000;
  std::uint64_t max_tree_nodes = 10'000'000;  ///< None, dict and list nodes of the tree
  std::uint64_t max_chunks = 50'000'000;
  std::uint32_t max_files = 65'536;
  std::uint32_t max_depth = 128;  ///< tree nesting; values above 1024 act as 1024 (stack)
  std::uint32_t max_rank = 32;
  std::uint32_t max_key_bytes = 4096;
  std::uint64_t max_file_bytes = 1ull << 46;  ///< 64 TiB
};

/// Serialises an index (compact JSON, deterministic). Dict keys and file names are written as
/// given: they must be valid UTF-8 (see is_valid_utf8), or the index will not parse.
std::string encode_index(const index& ix);

/// True when `s` is valid UTF-8: what a dict key must be to round trip through index.json.
bool is_valid_utf8(std::string_view s) noexcept;

/// Parses and validates an index. `json` must be followed by `parse_padding` readable bytes.
/// Validates: format name and major version (a different major is errc::unsupported_version);
/// caps; plain file names (no '/', no "..", no NUL, not "." or empty, unique); known dtypes and
/// codecs; overflow-checked shapes; leaf paths equal the paths implied by the tree; each leaf
/// referenced exactly once; chunk raw sizes sum to the leaf's bytes; raw chunks have
/// stored == raw; every chunk inside its file's size; no two chunks of a file overlap; dict
/// keys unique. Errors are errc::corrupt (or limit_exceeded / unsupported_version) with a
/// message naming index.json, the leaf path and what was expected vs found.
result<index> parse_index(std::string_view json, const parse_limits& limits = {});

/// The commit marker, written last. Its presence with a matching index checksum is what makes
/// a directory a checkpoint.
struct commit_marker {
  std::uint64_t index_bytes = 0;
  std::uint64_t index_xxh3 = 0;
  std::uint64_t metadata_bytes = 0;
  std::uint64_t metadata_xxh3 = 0;
  bool has_job = false;
  std::uint64_t job_bytes = 0;
  std::uint64_t job_xxh3 = 0;
  std::uint64_t logical_bytes = 0;  ///< sum of the leaves' raw bytes
  std::uint64_t stored_bytes = 0;   ///< sum of the data files' sizes
  std::uint64_t created_unix_ns = 0;
};

std::string encode_commit(const commit_marker& m);
/// Same validation style as parse_index (COMMIT larger than 1 MiB is limit_exceeded); `json`
/// padded likewise.
result<commit_marker> parse_commit(std::string_view json);

}  // namespace ckpt::format
