// The checkpoint-directory layer: everything that makes a directory a checkpoint durably, and
// the job directory's small files (LATEST, DONE). Together with the io backends this is the only
// code that fsyncs, renames or creates durable names; everything goes through the io engine, so
// the recording and fault-injecting backends (tests) and the kill points see every step.
//
// The commit protocol (RELIABILITY.md, steps 4-8; docs/FORMAT.md "Commit protocol"):
//   1. the caller has written its data files inside `.<name>.tmp-<pid>-<hex>` (all writes
//      completed); commit() fsyncs and closes them;
//   2. a differential checkpoint's hard links to its base's data files are made; the small
//      files (metadata.json, job.json, the index) are written, each fsynced;
//   3. the commit marker (COMMIT) last, fsynced;
//   4. fsync of the temporary directory;
//   5. renameat2 to the final name (RENAME_NOREPLACE, or RENAME_EXCHANGE when overwriting an
//      existing checkpoint: the old one stays whole until that instant), then fsync of the
//      parent; when that fsync fails the rename is undone, so that what is visible matches the
//      failure reported;
//   6. an exchanged old checkpoint is renamed to `.<name>.trash-<pid>-<hex>`, the parent fsynced,
//      and the trash removed before commit() returns.
// Used by the single-process save (pipeline/save.cpp), rank 0's sharded commit (shard/) and,
// for replace_file, the store's LATEST and DONE (job/store.cpp).
//
// Memory: every function takes its strings by value (a coroutine keeps them in its frame);
// `io::file` arguments are descriptors the caller keeps open until the awaited call completes.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/io.hpp>

#include <boost/asio/awaitable.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::checkpoint {

namespace asio = boost::asio;

/// A token for temporary and trash names: "<pid>-<8 hex digits>", unique within the process
/// and unlikely to repeat across processes.
std::string unique_suffix();
/// ".<name>.tmp-<suffix>": where a save of <name> is written before its atomic rename.
std::string temp_name(std::string_view name, std::string_view suffix);
/// ".<name>.trash-<suffix>": where a replaced or retired checkpoint waits for deletion.
std::string trash_name(std::string_view name, std::string_view suffix);

/// mkdir -p: each directory created is made durable by an fsync of its parent.
asio::awaitable<result<void>> make_directories(io::engine& io, std::filesystem::path dir);

/// fsync of the directory `dir` (its entries' creations, renames and removals become durable).
asio::awaitable<result<void>> fsync_directory(io::engine& io, std::filesystem::path dir);

/// Creates `dir/name` (O_EXCL: it must not exist), writes `content`, fsyncs and closes it.
/// `dir` is an open directory (its `name` labels errors).
asio::awaitable<result<void>> write_new_file(io::engine& io, io::file dir, std::string name,
                                             std::string content);

/// Atomically replaces `dir/name` with `content` (LATEST, DONE): writes `dir/<name>.tmp`
/// (O_TRUNC), fsyncs it, renames it over `dir/name`, fsyncs `dir`. A crash leaves the old or
/// the new file. Never retries a failed fsync.
asio::awaitable<result<void>> replace_file(io::engine& io, std::filesystem::path dir,
                                           std::string name, std::string content);

/// Removes `path` and everything below it (no error when it is already gone). Entries are
/// listed with std::filesystem and unlinked through the engine; symbolic links are removed,
/// never followed. After a failure it removes what it can and reports the first error. Not made
/// durable (the caller fsyncs the parent when it matters).
asio::awaitable<result<void>> remove_tree(io::engine& io, std::filesystem::path path);

/// Renames `dir/entry` (empty: `dir/name`) to a fresh trash name of checkpoint `name`,
/// `.<name>.trash-<suffix>` (RENAME_NOREPLACE), and returns that name; no fsync.
asio::awaitable<result<std::string>> rename_to_trash(io::engine& io, io::file dir,
                                                     std::string entry, std::string name);

/// A small file of a checkpoint: its name inside the checkpoint and its bytes.
struct small_file {
  std::string name;
  std::string content;
};

/// A hard link a differential checkpoint makes to a data file of its base: `from` in the open
/// directory `dir` (the base's, committed, so its data is durable) becomes `name` in the
/// temporary directory. Made after the data files' fsyncs, durable with the directory's fsync.
struct link_request {
  io::file dir;
  std::string from;
  std::string name;
};

/// What commit() needs: the parent and temporary directory, names and files.
struct commit_request {
  /// Data files whose writes all completed: fsynced (concurrently), then closed, first.
  /// commit() closes them whatever happens.
  std::vector<io::file> data_files;
  /// The directory the checkpoint appears in and the temporary directory holding the fsynced
  /// data, both open; or fd -1 (both) to have commit() open and close them.
  io::file parent_dir;
  std::filesystem::path parent;
  io::file tmp_dir;
  std::string tmp_name;
  std::string name;                 ///< the checkpoint's final name inside `parent`
  std::vector<link_request> links;  ///< hard links to a base's data files (differential)
  std::vector<small_file> files;    ///< written concurrently, each fsynced, before the marker
  small_file marker;                ///< the commit marker, written last
  bool overwrite = false;           ///< exchange with an existing checkpoint of that name
  /// Prefix of the kill points passed (test builds): "" for a save (`after_commit_marker`,
  /// `after_rename`), "shard_" for a sharded commit (`shard_before_commit_marker`, ...).
  std::string kill_prefix;
};

struct commit_timing {
  double data_fsync_s = 0;  ///< the data files' fsyncs
};

/// Steps 1-6 of the protocol above. On failure nothing has become visible under `name` (the
/// temporary directory remains for the caller to remove). An existing `name` without
/// `overwrite` fails with errc::already_exists.
asio::awaitable<result<commit_timing>> commit(io::engine& io, commit_request request);

/// Retention's deletion of whole checkpoints `names` in the open directory `dir`: each renamed
/// into the trash, the renames made durable (one fsync of `dir`), then the trash removed.
/// `renamed[i]` tells whether names[i] went; a name that could not be renamed is left and its
/// error kept in `first_error` (as is a failed removal of trash, which start-up cleans).
struct retired {
  std::vector<char> renamed;
  std::optional<error> first_error;
};
asio::awaitable<result<retired>> retire(io::engine& io, std::filesystem::path dir,
                                        std::vector<std::string> names);

}  // namespace ckpt::checkpoint
