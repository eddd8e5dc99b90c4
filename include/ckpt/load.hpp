// ckpt/load.hpp - restoring trees and metadata from a checkpoint directory.
//
// Nothing of the caller's memory is touched before the whole checkpoint has been validated:
// commit marker and index checksum, format version, caps, file names, shapes, chunk bounds and
// the template match. Every chunk's XXH3 is verified (unless disabled) before it is decoded
// straight into its destination. Chunks are checked one by one as they arrive, so a load that
// fails on a damaged chunk may already have filled other leaves of the template: its error
// names every template leaf whose memory was written ("the template's memory of N leaves was
// partly or wholly overwritten ..."); every leaf it does not name is untouched.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/runtime.hpp>
#include <ckpt/tree.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace ckpt {

struct load_options {
  /// Template mode. false (strict): the template must match the checkpoint exactly (same
  /// structure, dtypes and shapes); every mismatch is reported at once. true (partial): restore
  /// only the template's leaves that the checkpoint holds with the same dtype and shape; skip
  /// the rest silently (e.g. a trainer checkpoint into an inference template).
  bool partial = false;
  /// Verify each chunk's XXH3-64 before decoding. Turning this off trades integrity for a little
  /// CPU: a flipped bit on disk in a raw chunk then yields silently wrong values.
  bool verify_checksums = true;
  /// Raw, page-aligned chunks are read straight into the destination (the template's memory or
  /// fresh arrays) and verified there, so a load that fails on a damaged chunk may have written
  /// part of the template (its error names those leaves). true: read and verify every chunk in
  /// bounded staging buffers first and touch the template's memory only once all passed. Costs
  /// a second read of the data (about twice the load time on a cold cache).
  bool verify_first = false;
  /// Read data files with O_DIRECT where the file system allows it.
  bool direct_io = true;
  /// A template leaf restored in place must have writable memory: false (default) gives a
  /// read-only leaf (a const borrow, a shared array) a fresh owned array in the result, as a
  /// spec leaf gets one; true makes such a leaf an errc::invalid_argument naming it, for callers
  /// that rely on the load filling their memory. Spec leaves are always allocated.
  bool in_place_only = false;
  /// The runtime to run on; null means runtime::global().
  std::shared_ptr<ckpt::runtime> runtime;
};

struct loaded_checkpoint {
  /// The restored tree. With a template: the template's structure (in partial mode pruned to
  /// the restored leaves); leaves that had writable memory in the template were filled in place
  /// (the same memory); spec leaves and read-only leaves got fresh owned arrays (compare
  /// data pointers, or set load_options::in_place_only). Without one: the tree as saved.
  ckpt::tree tree;
  boost::json::object metadata;
  /// job.json when the checkpoint has one.
  std::optional<boost::json::object> job;
};

/// Loads `path`. `template_tree` null: the whole tree as saved; else `*template_tree` must stay
/// alive until the load completes (the awaitable starts when awaited).
boost::asio::awaitable<result<loaded_checkpoint>> load(std::filesystem::path path,
                                                       const tree* template_tree = nullptr,
                                                       load_options options = {});
result<loaded_checkpoint> load_blocking(std::filesystem::path path,
                                        const tree* template_tree = nullptr,
                                        load_options options = {});

/// Loads one leaf or subtree by path (see tree.hpp) without reading any other leaf's chunks.
boost::asio::awaitable<result<tree>> load_subtree(std::filesystem::path path,
                                                  std::string subtree_path,
                                                  load_options options = {});
result<tree> load_subtree_blocking(std::filesystem::path path, std::string subtree_path,
                                   load_options options = {});

/// metadata.json only, without opening the index or any data file (checked against the commit
/// marker's checksum). `rt`: the runtime whose engine reads (null: runtime::global()).
boost::asio::awaitable<result<boost::json::object>> load_metadata(
    std::filesystem::path path, std::shared_ptr<runtime> rt = nullptr);
result<boost::json::object> load_metadata_blocking(std::filesystem::path path,
                                                   std::shared_ptr<runtime> rt = nullptr);
/// job.json only (errc::not_found when the checkpoint has none), checked as metadata.json is.
boost::asio::awaitable<result<boost::json::object>> load_job(std::filesystem::path path,
                                                             std::shared_ptr<runtime> rt = nullptr);
result<boost::json::object> load_job_blocking(std::filesystem::path path,
                                              std::shared_ptr<runtime> rt = nullptr);

/// True when `path` holds a committed checkpoint (commit marker present and consistent with
/// its index). Reads only COMMIT and index.json. Blocks on `rt` (null: runtime::global()):
/// never call it from one of that runtime's threads.
result<bool> is_committed(std::filesystem::path path, std::shared_ptr<runtime> rt = nullptr);

}  // namespace ckpt
