// Test-only hooks (internal header). They exist only where CKPT_TESTING is defined, i.e. in the
// `ckpt_testing` library that the tests and their child processes link; libckpt itself is built
// without them and every call below is an empty inline function there.
//
//  - planted(bug): env CKPT_TEST_PLANT_BUG (comma-separated) names deliberate protocol bugs that
//    the crash-state generator must catch: skip_dir_fsync (save.cpp: no fsync of the temporary
//    or the parent directory), fsync_before_write (save.cpp: the data files are fsynced before
//    their writes are submitted, not after they completed), latest_before_data (store_io.cpp:
//    LATEST.tmp is renamed over LATEST before its contents were fsynced).
//  - kill_point(name): env CKPT_KILL_POINT=name[:n] raises SIGKILL at the n-th (default first)
//    time the process passes that point: after_data_fsync, after_commit_marker, after_rename
//    (save.cpp), after_latest_tmp (store_io.cpp), and the sharded save's (shard.cpp):
//    shard_after_plan, shard_after_local_commit, shard_after_manifest (any rank),
//    shard_before_commit_marker, shard_after_commit_marker, shard_after_rename (rank 0).
//  - fs events: store_io.cpp's plain POSIX calls (LATEST, DONE, retention) report each
//    successful mutation to an observer, so that a recording test sees them beside the io
//    engine's ops (which it records with a wrapping backend).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace ckpt::testing {

struct fs_event {
  enum kind_t : std::uint8_t { open, write, fsync, rename, mkdir, remove_tree } kind = open;
  std::string path;   ///< absolute path (rename: the old one)
  std::string path2;  ///< rename: the new path
  int flags = 0;      ///< open: O_* flags
  std::uint64_t offset = 0;
  std::string_view data;  ///< write: the bytes (valid during the call only)
};

#ifdef CKPT_TESTING
bool planted(std::string_view bug) noexcept;
void kill_point(std::string_view name) noexcept;
/// Installs (or, with an empty function, removes) the observer of store_io's file-system ops.
void set_fs_observer(std::function<void(const fs_event&)> observer);
void notify(const fs_event& e);
#else
inline bool planted(std::string_view) noexcept {
  return false;
}
inline void kill_point(std::string_view) noexcept {}
inline void notify(const fs_event&) {}
#endif

/// Cheap guard so that callers build events only when someone listens.
#ifdef CKPT_TESTING
bool observed() noexcept;
#else
inline bool observed() noexcept {
  return false;
}
#endif

}  // namespace ckpt::testing
