// ckpt/store.hpp - the checkpoints of one job directory: path resolution, the LATEST pointer,
// listing, retention and start-up cleanup.
//
// A job directory (`checkpoints_dir / project / group / job_name`, see job.hpp) holds:
//  - checkpoint directories, one per suffix (`step_10`), written by save.hpp's commit protocol;
//  - `LATEST`: a small text file naming the suffix of the last registered checkpoint;
//  - `DONE`: present once the job marked itself complete;
//  - ckpt's own transient names: `.<name>.tmp-<pid>-<rand>` (a save in progress or abandoned),
//    `.<name>.trash-<pid>-<rand>` (a checkpoint on its way to deletion), `LATEST.tmp`,
//    `DONE.tmp`. Names starting with '.' are never checkpoints.
//
// Every function here is synchronous (small metadata IO: a few reads, fsyncs and renames) and
// thread-safe in the sense that it keeps no state, except the `async_` forms of listing and
// LATEST, which do the same work as awaitables; the protocol assumes one writer per job
// directory. Functions that do IO take the runtime whose engine does it (`rt`; null means
// `ckpt::runtime::global()`): the synchronous ones block the calling thread on it, so never call
// them from one of that runtime's own threads (the `async_` forms may be awaited from any
// executor). Every write goes through the engine (and so through a fault-injecting or recording
// backend the runtime was created over).
#pragma once

#include <ckpt/error.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {
class runtime;
}

namespace ckpt::store {

/// The file in a job directory that names its latest registered checkpoint.
inline constexpr std::string_view latest_file_name = "LATEST";
/// The file in a job directory that says the job completed.
inline constexpr std::string_view done_file_name = "DONE";

/// Checks that `rel` is a relative path that stays below the directory it is resolved against:
/// not empty, not absolute, no `..` component, no NUL, and its last component neither `.` nor
/// starting with '.' (ckpt's transient namespace). The check is lexical; symbolic links inside
/// the directory are trusted.
/// @param rel the relative path; @param what names it in the error ("checkpoint path").
/// @return success, or `errc::path_escape` (escapes, absolute) / `errc::invalid_argument`
/// (empty, hidden last component) naming the path.
result<void> check_relative(const std::filesystem::path& rel, std::string_view what);

/// `base / rel` after check_relative(rel); `base` is made absolute (against the current
/// directory) and lexically normalised.
result<std::filesystem::path> resolve(const std::filesystem::path& base,
                                      const std::filesystem::path& rel,
                                      std::string_view what = "checkpoint path");

/// "Natural" order of names: runs of digits compare by numeric value (`step_9` < `step_10`,
/// leading zeros break ties, fewer first), everything else byte-wise. A strict weak order.
bool natural_less(std::string_view a, std::string_view b) noexcept;

/// The committed checkpoints directly inside `job_dir`, in natural order. Skips files, names
/// starting with '.' (temporary and trash directories) and directories without a valid commit
/// marker (`ckpt::is_committed`). A missing `job_dir` yields an empty list.
result<std::vector<std::string>> list_committed(const std::filesystem::path& job_dir,
                                                const std::shared_ptr<runtime>& rt = {});

/// Registers `suffix` as the job's latest checkpoint, durably and atomically: refuses (with
/// `errc::not_committed` / `errc::not_found`) a suffix that is not a committed checkpoint,
/// then writes `LATEST.tmp`, fsyncs it, renames it over `LATEST` and fsyncs `job_dir`.
/// A crash at any point leaves either the old or the new LATEST.
result<void> write_latest(const std::filesystem::path& job_dir, const std::filesystem::path& suffix,
                          const std::shared_ptr<runtime>& rt = {});

/// The suffix `LATEST` names, or none when there is no LATEST file. A LATEST that names a
/// missing checkpoint (`errc::not_found`), an uncommitted one (`errc::not_committed`) or an
/// escaping path (`errc::path_escape`) is an error, never a silent fallback to another
/// checkpoint.
result<std::optional<std::string>> read_latest(const std::filesystem::path& job_dir,
                                               const std::shared_ptr<runtime>& rt = {});

/// Awaitable forms of list_committed, write_latest and read_latest: the same work on `rt`'s
/// engine, resuming the caller on its own executor.
boost::asio::awaitable<result<std::vector<std::string>>> async_list_committed(
    std::filesystem::path job_dir, std::shared_ptr<runtime> rt = {});
boost::asio::awaitable<result<void>> async_write_latest(std::filesystem::path job_dir,
                                                        std::filesystem::path suffix,
                                                        std::shared_ptr<runtime> rt = {});
boost::asio::awaitable<result<std::optional<std::string>>> async_read_latest(
    std::filesystem::path job_dir, std::shared_ptr<runtime> rt = {});

/// What retention keeps. With both fields 0 nothing is deleted.
struct retention_options {
  /// Keep the newest `keep_last` committed checkpoints (natural order). 0: no such rule.
  std::size_t keep_last = 0;
  /// Also keep every checkpoint whose step (the last run of digits in its name) is a multiple
  /// of `keep_every`; names without digits are always kept under this rule. 0: no such rule.
  std::uint64_t keep_every = 0;
};

struct retention_report {
  std::vector<std::string> removed;  ///< checkpoints deleted, natural order
  std::vector<std::string> kept;     ///< committed checkpoints left, natural order
};

/// Deletes the committed checkpoints that `options` does not keep. Never deletes LATEST's
/// target (read fresh from disk) nor anything that is not a committed checkpoint. Each victim
/// is first renamed to `.<name>.trash-<pid>-<rand>` (so it is never seen half-deleted), the
/// job directory is fsynced, then the trash is removed. Runs synchronously on the caller's
/// thread: call it after `write_latest`, off the training thread (restoreable_job does it on a
/// background thread). When LATEST is unreadable nothing is deleted.
result<retention_report> apply_retention(const std::filesystem::path& job_dir,
                                         const retention_options& options,
                                         const std::shared_ptr<runtime>& rt = {});

struct cleanup_report {
  std::vector<std::string> removed;  ///< names removed, sorted
};

/// Removes ckpt's own stale transient entries from `job_dir`: `.<name>.tmp-<pid>-<rand>` and
/// `.<name>.trash-<pid>-<rand>` directories and `LATEST.tmp` / `DONE.tmp` files. Temporary
/// directories of this very process (its pid) are left alone, since they may belong to a save
/// in flight. Anything else, hidden or not, is never touched. Call it at job start-up, before
/// the first save (one writer per job directory). A missing `job_dir` is not an error.
result<cleanup_report> cleanup_stale(const std::filesystem::path& job_dir,
                                     const std::shared_ptr<runtime>& rt = {});

/// True when `job_dir` holds a `DONE` file. IO errors read as false.
bool is_done(const std::filesystem::path& job_dir) noexcept;
/// Durably creates `job_dir/DONE` (write `DONE.tmp`, fsync, rename, fsync dir) holding
/// `content`. Creates `job_dir` when missing.
result<void> mark_done(const std::filesystem::path& job_dir, std::string_view content,
                       const std::shared_ptr<runtime>& rt = {});

}  // namespace ckpt::store
