// The checkpoint index and commit marker: in-memory model, writer (index_writer.cpp,
// commit_marker.cpp) and validating parsers over simdjson On Demand (index_parser.cpp with the
// cross checks of index_checks.cpp; commit_marker.cpp). Internal header; the contract is
// docs/FORMAT.md.
#pragma once

#include "format/codec.hpp"
#include "format/runs.hpp"

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
inline constexpr std::uint32_t version_minor = 2;

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
  bool hashed = false;  ///< `hash` recorded (1.1; a leaf records all its chunks' or none)
  raw_hash hash;        ///< XXH3-128 of the raw bytes: what a differential save compares
  /// (1.2) Raw bytes that are one value repeated, not stored: the stored bytes decode to the
  /// rest (raw_size - run_bytes(runs) bytes). All of the chunk: nothing stored, nothing read.
  std::vector<fill_run> runs;
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
  /// (1.1) Empty: written by this checkpoint. Otherwise a hard link to a data file of an
  /// earlier checkpoint, the name of the checkpoint that wrote it (informative: for tools).
  std::string origin;
};

/// A data file as error messages name it: "data-00001.bin", or for a hard link to an earlier
/// checkpoint's file "shared-...-00001.bin (written by step_10)".
inline std::string file_label(const file_entry& f) {
  return f.origin.empty() ? f.name : f.name + " (written by " + f.origin + ")";
}

/// The name a differential save gives its hard link to data file `n` of the checkpoint whose
/// index checksum is `origin_xxh3`: "shared-<16 hex>-NNNNN.bin".
std::string shared_file_name(std::uint64_t origin_xxh3, std::uint32_t n);

/// A node of the tree's structure. Nodes are stored in pre-order: a dict's or list's children
/// (each followed by its own subtree) come right after it, so the n-th leaf node is leaves[n].
struct tree_node {
  ckpt::tree::kind kind = ckpt::tree::kind::none;
  std::uint32_t children = 0;    ///< dict / list: how many
  std::uint32_t key_size = 0;    ///< a dict's child: its key is index::key(node)
  std::uint64_t key_offset = 0;  ///< into index::keys
};

struct index {
  std::vector<file_entry> files;
  std::vector<leaf_entry> leaves;  ///< in the tree's flatten() order
  /// The tree's structure (dict/list/None nodes and leaves), pre-order; see structure().
  std::vector<tree_node> nodes;
  std::string keys;  ///< the dict keys of `nodes`, back to back
  /// A parsed index's version (what tools show); encode_index always writes its own.
  std::uint64_t read_major = version_major, read_minor = version_minor;

  std::string_view key(const tree_node& n) const noexcept {
    return std::string_view(keys).substr(n.key_offset, n.key_size);
  }
};

/// Sets ix.nodes and ix.keys to the structure of `t` (its leaves in flatten() order).
void set_structure(index& ix, const tree& t);

/// The tree the nodes describe, leaf n made by `make_leaf(n)` (a result<ckpt::array>).
template <class F>
result<tree> build_tree(const index& ix, F&& make_leaf);

/// The tree the nodes describe with `array::spec(dtype, shape)` leaves (as index.json says it).
tree structure(const index& ix);

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

/// What the writer checks before a save writes a byte: the index model `ix` (leaves, nodes,
/// keys, chunks, files as planned) within the caps a reader applies, so that nothing is
/// committed that parse_index would refuse. The same messages as the parser's, naming
/// index.json; errc::limit_exceeded (errc::invalid_argument for a key that is not UTF-8).
result<void> check_writable(const index& ix, const parse_limits& limits = {});

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

// ---- build_tree ---------------------------------------------------------------------------------

namespace detail {
template <class F>
result<void> build_node(const index& ix, std::size_t& pos, std::size_t& leaf, F& make_leaf,
                        tree& out) {
  const tree_node& n = ix.nodes[pos++];
  switch (n.kind) {
    case tree::kind::none:
      return success();
    case tree::kind::leaf: {
      CKPT_TRY(ckpt::array a, make_leaf(leaf++));
      out = tree(std::move(a));
      return success();
    }
    case tree::kind::dict:
      out = tree::dict();
      out.reserve(n.children);
      for (std::uint32_t i = 0; i < n.children; ++i) {
        // (Built in place: no subtree is moved per level.)
        tree& slot = out.set(std::string(ix.key(ix.nodes[pos])), tree());
        CKPT_TRY(build_node(ix, pos, leaf, make_leaf, slot));
      }
      return success();
    case tree::kind::list:
      out = tree::list();
      out.reserve(n.children);
      for (std::uint32_t i = 0; i < n.children; ++i) {
        CKPT_TRY(build_node(ix, pos, leaf, make_leaf, out.append(tree())));
      }
      return success();
  }
  return success();
}
}  // namespace detail

template <class F>
result<tree> build_tree(const index& ix, F&& make_leaf) {
  tree t;
  if (ix.nodes.empty()) return t;
  std::size_t pos = 0, leaf = 0;
  CKPT_TRY(detail::build_node(ix, pos, leaf, make_leaf, t));
  return t;
}

}  // namespace ckpt::format
