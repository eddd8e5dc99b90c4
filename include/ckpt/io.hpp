// ckpt/io.hpp - awaitable file IO over io_uring (or a thread pool where io_uring is blocked).
//
// Every operation is an `asio::awaitable<result<...>>` that may be awaited from a coroutine on
// any executor; it resumes on the awaiting coroutine's executor. Reads and writes always finish
// the whole length (short transfers are resubmitted) or fail; a read that meets end-of-file
// returns the bytes it got. Memory ownership: every buffer and string passed in is owned by the
// caller and must stay valid until the awaited operation completes, which a coroutine
// guarantees by construction when it awaits the call.
#pragma once

#include <ckpt/error.hpp>

#include <boost/asio/awaitable.hpp>

#include <fcntl.h>
#include <linux/stat.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace ckpt::io {

namespace asio = boost::asio;

/// Returns once no completion of any engine is still in the middle of being posted to the
/// executor of the coroutine that awaits it. An execution context on which ckpt operations were
/// awaited must not be destroyed while such a post may still be inside it (the awaiting
/// coroutine can run, finish and let its owner destroy the context before the posting thread
/// has returned from the context's wake-up call): call this after the context's last run()
/// returned and before destroying it. ckpt's runtimes and the job layer's blocking forms do.
void wait_for_completions_posted() noexcept;

/// Which implementation runs the operations.
enum class backend_kind : std::uint8_t {
  automatic,  ///< io_uring when it can be set up, else threads; `CKPT_IO_BACKEND` overrides
  uring,      ///< io_uring (fails to create when the kernel or seccomp refuses)
  threads,    ///< a thread pool issuing plain syscalls (pread/pwrite/fsync/...)
};

struct engine_options {
  backend_kind backend = backend_kind::automatic;
  /// Operations in flight in the kernel at once; more are parked and submitted as others
  /// complete (backpressure).
  unsigned queue_depth = 64;
  /// Worker threads of the threads backend.
  unsigned threads = 4;
};

/// An open file descriptor plus what the engine knows about it. Closing is explicit
/// (`engine::close`); a `file` is a plain value and does not close on destruction.
struct file {
  int fd = -1;
  /// Opened with O_DIRECT: buffers, offsets and lengths must be 4 KiB aligned. False when the
  /// caller asked for O_DIRECT but the file system refused it and the engine fell back.
  bool direct = false;
  /// The path it was opened with, for error messages.
  std::string name;
};

class backend;

/// One io_uring ring (or thread pool) and the machinery to await its completions.
///
/// Thread safety: all member functions may be called concurrently from any thread. Destroying
/// the engine cancels parked operations (they complete with `errc::cancelled`) and waits for the
/// operations already in the kernel; do not destroy it from inside one of its completions.
class engine {
 public:
  /// Creates an engine; `options.backend == automatic` honours CKPT_IO_BACKEND=uring|threads.
  static result<std::shared_ptr<engine>> create(const engine_options& options = {});
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// "uring" or "threads" (or the name of an injected backend).
  std::string_view backend_name() const noexcept;

  /// openat(dirfd, path, flags, mode). With O_DIRECT on a file system that refuses it (EINVAL),
  /// opens again without O_DIRECT and reports `file::direct == false`.
  asio::awaitable<result<file>> open(int dirfd, std::string path, int flags, mode_t mode = 0644);
  asio::awaitable<result<void>> close(file f);
  /// Writes all of `data` at `offset`; a short write continues where it stopped.
  asio::awaitable<result<void>> write(const file& f, std::span<const std::byte> data,
                                      std::uint64_t offset);
  /// Reads until `data` is full or end of file; returns the bytes read.
  asio::awaitable<result<std::size_t>> read(const file& f, std::span<std::byte> data,
                                            std::uint64_t offset);
  asio::awaitable<result<void>> fsync(const file& f, bool datasync = false);
  asio::awaitable<result<void>> fallocate(const file& f, int mode, std::uint64_t offset,
                                          std::uint64_t length);
  /// Sets the file's size (the io_uring backend runs this one call synchronously: liburing 2.3
  /// has no ftruncate operation).
  asio::awaitable<result<void>> ftruncate(const file& f, std::uint64_t size);
  asio::awaitable<result<struct statx>> statx(int dirfd, std::string path, int flags = 0,
                                              unsigned mask = STATX_BASIC_STATS);
  asio::awaitable<result<void>> mkdir(int dirfd, std::string path, mode_t mode = 0755);
  /// renameat2; `flags` may be RENAME_NOREPLACE or RENAME_EXCHANGE.
  asio::awaitable<result<void>> rename(int old_dirfd, std::string old_path, int new_dirfd,
                                       std::string new_path, unsigned flags = 0);
  /// unlinkat; AT_REMOVEDIR removes an empty directory.
  asio::awaitable<result<void>> unlink(int dirfd, std::string path, int flags = 0);
  /// linkat (a hard link `new_path` to the file `old_path`; never follows a symbolic link).
  asio::awaitable<result<void>> link(int old_dirfd, std::string old_path, int new_dirfd,
                                     std::string new_path);

 private:
  // An engine over a given backend (src/io/backend.hpp: the seam for fault injection).
  friend result<std::shared_ptr<engine>> make_engine(std::unique_ptr<backend> b);
  struct impl;
  explicit engine(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace ckpt::io
