// The thread-pool backend: plain syscalls on an asio::thread_pool, for where io_uring is
// unavailable (seccomp, old kernels) or asked away with CKPT_IO_BACKEND=threads.
#include "io/backend.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>

namespace ckpt::io {

namespace {

int neg_errno(long r) noexcept {
  return r < 0 ? -errno : static_cast<int>(r);
}

}  // namespace

int run_syscall(const request& r) noexcept {
  switch (r.kind) {
    case op_kind::open:
      return neg_errno(::openat(r.dirfd, r.path, r.flags, static_cast<mode_t>(r.mode)));
    case op_kind::close:
      return neg_errno(::close(r.fd));
    case op_kind::read: {
      auto len = static_cast<std::size_t>(std::min(r.length, max_transfer));
      return neg_errno(::pread(r.fd, r.buffer, len, static_cast<off_t>(r.offset)));
    }
    case op_kind::write: {
      auto len = static_cast<std::size_t>(std::min(r.length, max_transfer));
      return neg_errno(::pwrite(r.fd, r.buffer, len, static_cast<off_t>(r.offset)));
    }
    case op_kind::fsync:
      return neg_errno(::fsync(r.fd));
    case op_kind::fdatasync:
      return neg_errno(::fdatasync(r.fd));
    case op_kind::fallocate:
      return neg_errno(
          ::fallocate(r.fd, r.flags, static_cast<off_t>(r.offset), static_cast<off_t>(r.length)));
    case op_kind::ftruncate:
      return neg_errno(::ftruncate(r.fd, static_cast<off_t>(r.length)));
    case op_kind::statx:
      return neg_errno(::statx(r.dirfd, r.path, r.flags, r.mode, r.statx_out));
    case op_kind::mkdir:
      return neg_errno(::mkdirat(r.dirfd, r.path, static_cast<mode_t>(r.mode)));
    case op_kind::rename:
      return neg_errno(::syscall(SYS_renameat2, r.dirfd, r.path, r.dirfd2, r.path2,
                                 static_cast<unsigned>(r.flags)));
    case op_kind::unlink:
      return neg_errno(::unlinkat(r.dirfd, r.path, r.flags));
    case op_kind::link:
      return neg_errno(::linkat(r.dirfd, r.path, r.dirfd2, r.path2, 0));
  }
  return -EINVAL;
}

namespace {

class thread_backend final : public backend {
 public:
  explicit thread_backend(unsigned threads) : pool_(std::max(1u, threads)) {}
  ~thread_backend() override { shutdown(); }

  std::string_view name() const noexcept override { return "threads"; }

  void submit(op* o) noexcept override {
    {
      // Posting under the lock orders every post before shutdown's join.
      std::lock_guard lock(mutex_);
      if (!stopping_.load(std::memory_order_relaxed)) {
        boost::asio::post(pool_, [this, o] {
          // Queued but not started when shutdown began: cancelled, like parked uring ops.
          o->complete(stopping_.load(std::memory_order_acquire) ? -ECANCELED : run_syscall(o->req));
        });
        return;
      }
    }
    o->complete(-ECANCELED);
  }

  void shutdown() noexcept override {
    {
      std::lock_guard lock(mutex_);
      stopping_.store(true, std::memory_order_release);
    }
    pool_.join();  // runs out the queue (cancelling) and waits for syscalls in progress
  }

 private:
  std::mutex mutex_;
  std::atomic<bool> stopping_{false};
  boost::asio::thread_pool pool_;
};

}  // namespace

result<std::unique_ptr<backend>> make_thread_backend(const engine_options& options) {
  return std::unique_ptr<backend>(std::make_unique<thread_backend>(options.threads));
}

}  // namespace ckpt::io
