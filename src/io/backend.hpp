// src/io/backend.hpp - the narrow seam under the io engine (internal header).
//
// A backend executes raw, single-shot file-system requests and reports each one's raw result:
// `res >= 0` is the syscall's success value (bytes transferred, new fd, 0), `res < 0` is
// `-errno`. It knows nothing about short transfers, O_DIRECT fallback, error messages or
// coroutines: the engine (engine.cpp) does all of that above it.
//
// Wrapping (fault injection, recording): derive from `backend`, hold the real one, and in
// `submit` either complete the op yourself (`o->complete(-EIO)`), shrink the request before
// forwarding (`o->req.length /= 2` gives a short write/read), or forward a wrapper op of your own
// whose `complete` records the result and then completes the original.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/io.hpp>

#include <fcntl.h>

#include <cstdint>
#include <memory>
#include <string_view>

namespace ckpt::io {

enum class op_kind : std::uint8_t {
  open,
  close,
  read,
  write,
  fsync,
  fdatasync,
  fallocate,
  ftruncate,
  statx,
  mkdir,
  rename,
  unlink,
  link,
};

/// "open", "write", ...
std::string_view to_string(op_kind k) noexcept;

/// The largest length the engine puts in one read/write request (1 GiB; the kernel itself caps
/// a transfer at 0x7ffff000 bytes).
inline constexpr std::uint64_t max_transfer = std::uint64_t{1} << 30;

/// One raw request. Every pointer is owned by the submitter and stays valid until `complete`.
struct request {
  op_kind kind = op_kind::open;
  int fd = -1;                  ///< close, read, write, fsync, fdatasync, fallocate, ftruncate
  int dirfd = AT_FDCWD;         ///< open, statx, mkdir, unlink; rename, link: the old directory
  int dirfd2 = AT_FDCWD;        ///< rename, link: the new directory
  const char* path = nullptr;   ///< open, statx, mkdir, unlink; rename, link: the old path
  const char* path2 = nullptr;  ///< rename, link: the new path
  void* buffer = nullptr;       ///< read: destination; write: source (never written)
  std::uint64_t length = 0;     ///< read, write (<= max_transfer), fallocate; ftruncate: new size
  std::uint64_t offset = 0;     ///< read, write, fallocate
  /// open: O_* flags; statx: AT_* flags; rename: RENAME_*; unlink: AT_REMOVEDIR;
  /// fallocate: the mode (FALLOC_FL_*).
  int flags = 0;
  unsigned mode = 0;                  ///< open, mkdir: permission bits; statx: the mask
  struct statx* statx_out = nullptr;  ///< statx: where the result goes
  /// For diagnostics and recording only: the path of the file behind `fd` (may be empty).
  std::string_view file_name;
};

/// A request in flight. The backend calls `complete` exactly once, from any thread, possibly
/// before `submit` returns; the op may delete itself inside `complete`.
class op {
 public:
  explicit op(const request& r) : req(r) {}
  virtual ~op() = default;
  op(const op&) = delete;
  op& operator=(const op&) = delete;

  /// `res >= 0`: success value; `res < 0`: -errno (-ECANCELED when the backend shut down).
  virtual void complete(int res) noexcept = 0;

  request req;
};

/// Executes requests. `submit` and `shutdown` may be called from any thread.
class backend {
 public:
  virtual ~backend() = default;
  /// "uring", "threads", or the wrapper's own name.
  virtual std::string_view name() const noexcept = 0;
  /// Takes the op; it completes exactly once, later or inline.
  virtual void submit(op* o) noexcept = 0;
  /// Completes parked ops with -ECANCELED and waits for those already executing (in the kernel
  /// or on a worker). Afterwards `submit` completes ops with -ECANCELED at once. Idempotent;
  /// never call it from inside a completion. `~engine` calls it; destructors call it too.
  virtual void shutdown() noexcept = 0;
};

/// One io_uring ring with `options.queue_depth` ops in flight at most; fails cleanly (with the
/// errno of io_uring_queue_init) where io_uring is unavailable.
result<std::unique_ptr<backend>> make_uring_backend(const engine_options& options);
/// A pool of `options.threads` workers issuing plain syscalls.
result<std::unique_ptr<backend>> make_thread_backend(const engine_options& options);

/// An engine over a given backend: the seam for fault injection and recording (tests wrap a
/// real backend and pass it here).
result<std::shared_ptr<engine>> make_engine(std::unique_ptr<backend> b);

/// Executes one request synchronously with plain syscalls; returns res as a backend would.
int run_syscall(const request& r) noexcept;

}  // namespace ckpt::io
