// Test-only hooks (internal header). They exist only where CKPT_TESTING is defined, i.e. in the
// `ckpt_testing` library that the tests and their child processes link; libckpt itself is built
// without them and every call below is an empty inline function there.
//
//  - planted(bug): env CKPT_TEST_PLANT_BUG (comma-separated) names deliberate protocol bugs that
//    the crash-state generator must catch: skip_dir_fsync (checkpoint/durable.cpp: no fsync of
//    the temporary or the parent directory in a commit), fsync_before_write (pipeline/save.cpp:
//    the data files are fsynced before their writes are submitted, not after they completed),
//    latest_before_data (checkpoint/durable.cpp: LATEST.tmp is renamed over LATEST before its
//    contents were fsynced), link_after_dir_fsync (checkpoint/durable.cpp: a differential
//    checkpoint's hard links to its base's files are made after the rename, never fsynced).
//  - kill_point(name): env CKPT_KILL_POINT=name[:n] raises SIGKILL at the n-th (default first)
//    time the process passes that point: after_data_fsync (pipeline/save.cpp); the commit's
//    before_commit_marker, after_commit_marker, after_rename (checkpoint/durable.cpp, prefixed
//    "shard_" in rank 0's sharded commit); after_latest_tmp (checkpoint/durable.cpp); and the
//    sharded protocol's shard_after_plan, shard_after_local_commit, shard_after_manifest (any
//    rank; shard/).
// Every file-system mutation goes through the io engine, so a recording backend under it (see
// tests/test_crash_states.cpp) sees all of them.
#pragma once

#include <string_view>

namespace ckpt::testing {

#ifdef CKPT_TESTING
bool planted(std::string_view bug) noexcept;
void kill_point(std::string_view name) noexcept;
#else
inline bool planted(std::string_view) noexcept {
  return false;
}
inline void kill_point(std::string_view) noexcept {}
#endif

}  // namespace ckpt::testing
