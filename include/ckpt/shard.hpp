// ckpt/shard.hpp - sharded checkpoints of multi-host jobs, and resharding on load.
//
// In a multi-host job every process (rank) holds slices of the global arrays: a `sharded_leaf`
// names a global array (path, dtype, global shape) and the slices of it this process holds,
// each with its bytes. A sharded save is collective: every rank calls it with its own leaves,
// writes its slices as an ordinary ckpt checkpoint of its own, and rank 0 alone commits the
// whole (docs/FORMAT.md, "Sharded checkpoints"):
//
//   1. plan: rank 0 gathers every rank's leaf descriptions, checks that they agree (dtype and
//      global shape per path) and that the slices of each leaf cover it exactly; slices held
//      by several ranks (identical offset and extent, e.g. replicated leaves) are written once,
//      by the lowest rank holding them. Rank 0 creates the temporary directory and broadcasts
//      the plan (or the error).
//   2. every rank saves its slices as `<tmp>/rank-NNNNN/` with save.hpp's pipeline (data fsync,
//      its own COMMIT, rename, directory fsync), then sends rank 0 a manifest (its COMMIT's
//      size and checksum, or its error).
//   3. rank 0 checks every manifest against the COMMIT it reads from the shared file system,
//      writes metadata.json, job.json, sharded-index.json and the sharded COMMIT (each
//      fsynced), fsyncs the temporary directory, renames it to its final name and fsyncs the
//      parent: committed. Any rank's failure means no commit (rank 0 removes the temporary
//      directory), and that failure ("rank R: ...") is what every rank's save returns.
//   4. rank 0 broadcasts the outcome; every rank returns the same result.
//
// A crash of any rank before rank 0's rename leaves no new checkpoint visible (only a hidden
// temporary directory that `store::cleanup_stale` removes); the checkpoint directory is a
// shared file system visible to every rank under the same path.
//
// Load reshards: every rank names the slices it wants, in any slicing and with any number of
// ranks, and reads only the chunks of the saved slices that overlap them (chunks split a saved
// slice along its leading dimension, so slicing the same dimension reads little more than it
// needs). `load_sharded_full` gives one process the whole global arrays.
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/coordinator.hpp>
#include <ckpt/error.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/verify.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

/// A region of a global array: per dimension an offset and an extent (elements). A 0-d array
/// has one slice, `{{}, {}}`.
struct slice {
  ckpt::shape offset;
  ckpt::shape extent;
  friend bool operator==(const slice&, const slice&) = default;
  /// "[0:250, 0:64]" (offset:end per dimension).
  std::string to_string() const;
};

/// The whole of an array of shape `global`.
slice whole(const ckpt::shape& global);
/// Part `index` of `count` near-equal parts of `global` along dimension `dim` (the first
/// `global[dim] % count` parts are one larger); the other dimensions whole. A 0-d shape yields
/// `whole` for every index (all ranks hold the scalar). `index`/`count`/`dim` out of range is
/// `std::invalid_argument` (a programming error).
slice slice_along(const ckpt::shape& global, std::size_t dim, int index, int count);
/// slice_along(global, 0, index, count): the usual split of a leaf's leading dimension by rank.
slice row_slice(const ckpt::shape& global, int index, int count);

/// One slice of a global array held by this process, with its bytes: `data.shape()` equals
/// `where.extent` and `data.dtype()` the leaf's dtype. For a load, `data` may be a writable
/// array (filled in place) or an `array::spec` (allocated by the load).
struct shard {
  slice where;
  ckpt::array data;
};

/// A global array and the slices of it this process holds (any number, none included).
struct sharded_leaf {
  /// The leaf's path (tree.hpp's syntax: escaped keys joined by '/'); unique, not empty, and no
  /// path lies below another (`a` and `a/b` cannot both be leaves).
  std::string path;
  ckpt::dtype dtype = ckpt::dtype::f32;
  ckpt::shape global_shape;
  std::vector<shard> shards;
  /// Every rank that lists this leaf holds the whole array (one shard, `whole`). Written once,
  /// by the lowest such rank; on load, every rank that asks gets the whole array.
  bool replicated = false;

  /// A leaf this process holds whole, replicated on every rank that lists it.
  static sharded_leaf replicated_leaf(std::string path, ckpt::array data);
  /// A load request: the given slices of a leaf of `dtype` and `global_shape`, each an
  /// `array::spec` that the load allocates.
  static result<sharded_leaf> spec(std::string path, ckpt::dtype dtype, ckpt::shape global_shape,
                                   const std::vector<slice>& slices);
};

struct sharded_save_options {
  /// Options of each rank's own checkpoint: chunking, compression, data files, O_DIRECT and
  /// the runtime. `local.job` (rank 0's) becomes the sharded checkpoint's job.json;
  /// `local.overwrite` (rank 0's) replaces an existing checkpoint at the path atomically.
  /// `local.base` makes the save differential: it names a committed sharded checkpoint, and
  /// each rank's own checkpoint shares the unchanged chunks of the base's checkpoint of the same
  /// rank (`base / rank-NNNNN`; with the save's sharding, the same slices), hard-linking its
  /// files (save_options::base); with `local.base_optional` a rank whose part of the base is
  /// missing or unusable writes its part in full (`local.shared_bytes` says what it shared).
  save_options local;
};

struct sharded_save_stats {
  save_stats local;                 ///< this rank's own checkpoint
  int ranks = 1;                    ///< processes that took part
  std::uint64_t logical_bytes = 0;  ///< global: the leaves' bytes (replicas counted once)
  std::uint64_t stored_bytes = 0;   ///< global: every rank's data files
  double plan_s = 0;                ///< start -> plan broadcast (gather, checks, mkdir)
  double local_s = 0;               ///< start -> this rank's checkpoint committed
  double gathered_s = 0;            ///< start -> every manifest at rank 0
  double committed_s = 0;           ///< start -> outcome known on this rank
};

/// A sharded save in flight. Copyable (all copies share the save); thread-safe.
class sharded_save_handle {
 public:
  struct state;

  /// Completes when this rank's slices are captured: from here the caller may change them.
  boost::asio::awaitable<result<void>> staged() const;
  /// Completes when the sharded checkpoint is committed and visible (or failed: then with the
  /// same error on every rank).
  boost::asio::awaitable<result<void>> committed() const;
  result<void> wait_staged() const;
  result<void> wait_committed() const;
  bool is_done() const noexcept;
  /// Asks the save to stop, on this rank. Before this rank's own checkpoint committed, it
  /// fails with `errc::cancelled`, and so (the protocol carries every rank's outcome) the whole
  /// sharded save fails on every rank and rank 0 removes the temporary directory; once the
  /// verdict is under way the save completes normally. Collectives still run: every rank
  /// returns.
  void cancel() const noexcept;
  sharded_save_stats stats() const;
  const std::filesystem::path& path() const noexcept;

 private:
  friend struct detail::access;
  explicit sharded_save_handle(std::shared_ptr<state> s) : state_(std::move(s)) {}
  std::shared_ptr<state> state_;
};

/// Starts this rank's part of saving `leaves` (this rank's slices) and `metadata` (rank 0's is
/// the checkpoint's; the others' are ignored) as the sharded checkpoint `path` (the same path
/// on every rank, on a file system they share). Collective: every rank of `coord` must call it,
/// for the same path, in the same order as its other sharded saves. Returns at once; the
/// protocol runs on a thread of its own (the collectives block) and the local save on
/// `options.local.runtime`. The shards' bytes must stay valid and unchanged until `staged`.
/// Wait for `committed` before the coordinator (or MPI) goes away.
sharded_save_handle start_sharded_save(std::shared_ptr<coordinator> coord,
                                       std::filesystem::path path, std::vector<sharded_leaf> leaves,
                                       boost::json::object metadata,
                                       sharded_save_options options = {});
/// Saves and waits until committed.
boost::asio::awaitable<result<sharded_save_stats>> save_sharded(std::shared_ptr<coordinator> coord,
                                                                std::filesystem::path path,
                                                                std::vector<sharded_leaf> leaves,
                                                                boost::json::object metadata,
                                                                sharded_save_options options = {});
/// Blocking form (not from a runtime's threads).
result<sharded_save_stats> save_sharded_blocking(std::shared_ptr<coordinator> coord,
                                                 std::filesystem::path path,
                                                 std::vector<sharded_leaf> leaves,
                                                 boost::json::object metadata,
                                                 sharded_save_options options = {});

/// What a sharded load returns.
struct sharded_loaded {
  /// The requested leaves, their shards' `data` filled (in place where the request had
  /// writable memory, freshly allocated otherwise). Partial mode drops leaves it skipped.
  std::vector<sharded_leaf> leaves;
  boost::json::object metadata;
  std::optional<boost::json::object> job;
};

/// Loads the slices `wanted` asks for from the sharded checkpoint `path`, whatever slicing and
/// number of ranks saved it. Each wanted leaf must exist with the same dtype and global shape
/// (every mismatch is reported at once, errc::template_mismatch), unless
/// `options.partial`, which skips such leaves. Only the chunks that overlap the wanted slices
/// are read; every one is checksummed. Not collective: ranks load independently (use
/// `agree` to make every rank see one rank's failure). Nothing of the caller's memory is
/// touched before the sharded index, every needed rank's commit marker and index, and the
/// request have been validated.
boost::asio::awaitable<result<sharded_loaded>> load_sharded(std::filesystem::path path,
                                                            std::vector<sharded_leaf> wanted,
                                                            load_options options = {});
result<sharded_loaded> load_sharded_blocking(std::filesystem::path path,
                                             std::vector<sharded_leaf> wanted,
                                             load_options options = {});

/// One process loads every global array whole. The tree is a dict nested along the paths
/// (`params/w` -> {"params": {"w": ...}}); list indices come back as dict keys.
boost::asio::awaitable<result<loaded_checkpoint>> load_sharded_full(std::filesystem::path path,
                                                                    load_options options = {});
result<loaded_checkpoint> load_sharded_full_blocking(std::filesystem::path path,
                                                     load_options options = {});

/// Where the slices of one global leaf were saved.
struct sharded_slice_info {
  slice where;
  int rank = 0;  ///< the rank whose checkpoint holds it
};
struct sharded_leaf_info {
  std::string path;
  ckpt::dtype dtype = ckpt::dtype::f32;
  ckpt::shape global_shape;
  bool replicated = false;
  std::uint64_t num_bytes = 0;
  std::vector<sharded_slice_info> slices;
};
struct sharded_info {
  int ranks = 0;
  std::vector<sharded_leaf_info> leaves;
  boost::json::object metadata;
  std::optional<boost::json::object> job;
  std::uint64_t logical_bytes = 0;
  std::uint64_t stored_bytes = 0;
  std::uint64_t created_unix_ns = 0;
};

/// The sharded index, metadata and job of `path` (checked against its commit marker), without
/// opening any rank's checkpoint. Reads through `rt`'s engine (null: runtime::global()); call
/// it from a thread that is not one of the runtime's.
result<sharded_info> read_sharded_info(const std::filesystem::path& path,
                                       std::shared_ptr<runtime> rt = nullptr);
/// True when `path` holds a committed sharded checkpoint (its COMMIT and the files it records
/// check). Reads only the top-level small files; `is_committed` (load.hpp) is also true for
/// these. The runtime as for read_sharded_info.
result<bool> is_sharded_checkpoint(const std::filesystem::path& path,
                                   std::shared_ptr<runtime> rt = nullptr);
// Verifying: `verify_checkpoint` (verify.hpp) on a sharded checkpoint checks the top-level
// files, every rank's checkpoint in full (problems name "rank-NNNNN/<file>"), each rank's
// COMMIT against the sharded index, and every slice present in its rank's index with the
// expected dtype and shape.

}  // namespace ckpt
