// The io_uring backend: one ring, owned and touched only by the backend's own thread.
// See the block comment at the top of engine.cpp for the lifecycle.
#include "io/backend.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace ckpt::io {

namespace {

namespace asio = boost::asio;

/// user_data of SQEs that carry no op (the cancel-all at shutdown).
constexpr std::uint64_t no_op_data = 0;

class uring_backend final : public backend {
 public:
  explicit uring_backend(unsigned depth)
      : depth_(depth), event_(ctx_), work_(asio::make_work_guard(ctx_)) {}

  /// Sets up the ring and its eventfd and starts the completion thread.
  result<void> init() {
    // SQ entries: the depth plus room for the shutdown cancel; the CQ is twice that by default.
    int r = io_uring_queue_init(depth_ + 1, &ring_, 0);
    if (r < 0) return fail(system_error(-r, "io_uring_queue_init"));
    ring_ready_ = true;
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return fail(system_error(errno, "eventfd for io_uring"));
    event_.assign(efd);  // owns it from here on
    r = io_uring_register_eventfd(&ring_, efd);
    if (r < 0) return fail(system_error(-r, "io_uring_register_eventfd"));
    arm();
    thread_ = std::thread([this] { ctx_.run(); });
    return success();
  }

  ~uring_backend() override {
    shutdown();
    if (ring_ready_) io_uring_queue_exit(&ring_);
    // event_ closes the eventfd.
  }

  std::string_view name() const noexcept override { return "uring"; }

  void submit(op* o) noexcept override {
    if (o->req.kind == op_kind::ftruncate) {
      // liburing 2.3 has no ftruncate op (kernels add it in 6.9): a metadata call, run inline.
      o->complete(run_syscall(o->req));
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (!stopping_) {
        pending_.push_back(o);
        if (!flush_posted_) {
          // One flush (one io_uring_submit) for every op queued until it runs.
          flush_posted_ = true;
          asio::post(ctx_, [this] { flush(); });
        }
        return;
      }
    }
    o->complete(-ECANCELED);
  }

  void shutdown() noexcept override {
    std::deque<op*> parked;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      parked.swap(pending_);
    }
    for (op* o : parked)
      o->complete(-ECANCELED);
    if (thread_.joinable()) {
      asio::post(ctx_, [this] {
        draining_ = true;
        if (in_kernel_ > 0) {
          // Cancel what the kernel can cancel (most file IO just runs to its end).
          if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) {
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(sqe, no_op_data);
            submit_ring();
          }
        }
        maybe_finish();
      });
      thread_.join();
    }
  }

 private:
  // --- everything below runs on thread_ only ---

  void arm() {
    event_.async_wait(asio::posix::descriptor_base::wait_read,
                      [this](const boost::system::error_code& ec) { on_event(ec); });
  }

  void on_event(const boost::system::error_code& ec) {
    if (finished_) return;
    if (!ec) {
      std::uint64_t count;
      [[maybe_unused]] auto n = ::read(event_.native_handle(), &count, sizeof count);
    }
    reap();
    flush();
    maybe_finish();
    if (!finished_) arm();
  }

  void reap() {
    completed_.clear();
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      if (cqe->user_data != no_op_data) {
        completed_.emplace_back(reinterpret_cast<op*>(static_cast<std::uintptr_t>(cqe->user_data)),
                                cqe->res);
      }
    }
    io_uring_cq_advance(&ring_, seen);
    in_kernel_ -= static_cast<unsigned>(completed_.size());
    for (auto [o, res] : completed_)
      o->complete(res);
  }

  /// Moves parked ops into the ring up to the depth and submits them with one io_uring_submit.
  void flush() {
    unsigned added = 0;
    {
      std::lock_guard lock(mutex_);
      flush_posted_ = false;
      while (in_kernel_ < depth_ && !pending_.empty()) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) break;  // the SQ is full of unsubmitted entries; retried later
        op* o = pending_.front();
        pending_.pop_front();
        prepare(sqe, o->req);
        io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(o));
        ++in_kernel_;
        ++added;
      }
    }
    if (added > 0 || unsubmitted_) submit_ring();
  }

  void submit_ring() {
    for (;;) {
      int r = io_uring_submit(&ring_);
      if (r == -EINTR) continue;
      // -EAGAIN/-EBUSY: the entries stay in the SQ and go with the next submit (after a reap).
      unsubmitted_ = r < 0 || io_uring_sq_ready(&ring_) > 0;
      return;
    }
  }

  static void prepare(io_uring_sqe* sqe, const request& r) {
    switch (r.kind) {
      case op_kind::open:
        io_uring_prep_openat(sqe, r.dirfd, r.path, r.flags, static_cast<mode_t>(r.mode));
        break;
      case op_kind::close:
        io_uring_prep_close(sqe, r.fd);
        break;
      case op_kind::read:
        io_uring_prep_read(sqe, r.fd, r.buffer,
                           static_cast<unsigned>(std::min(r.length, max_transfer)), r.offset);
        break;
      case op_kind::write:
        io_uring_prep_write(sqe, r.fd, r.buffer,
                            static_cast<unsigned>(std::min(r.length, max_transfer)), r.offset);
        break;
      case op_kind::fsync:
        io_uring_prep_fsync(sqe, r.fd, 0);
        break;
      case op_kind::fdatasync:
        io_uring_prep_fsync(sqe, r.fd, IORING_FSYNC_DATASYNC);
        break;
      case op_kind::fallocate:
        io_uring_prep_fallocate(sqe, r.fd, r.flags, r.offset, r.length);
        break;
      case op_kind::ftruncate:  // handled in submit()
        break;
      case op_kind::statx:
        io_uring_prep_statx(sqe, r.dirfd, r.path, r.flags, r.mode, r.statx_out);
        break;
      case op_kind::mkdir:
        io_uring_prep_mkdirat(sqe, r.dirfd, r.path, static_cast<mode_t>(r.mode));
        break;
      case op_kind::rename:
        io_uring_prep_renameat(sqe, r.dirfd, r.path, r.dirfd2, r.path2,
                               static_cast<unsigned>(r.flags));
        break;
      case op_kind::unlink:
        io_uring_prep_unlinkat(sqe, r.dirfd, r.path, r.flags);
        break;
      case op_kind::link:
        io_uring_prep_linkat(sqe, r.dirfd, r.path, r.dirfd2, r.path2, 0);
        break;
    }
  }

  void maybe_finish() {
    if (draining_ && in_kernel_ == 0 && !finished_) {
      finished_ = true;
      boost::system::error_code ignored;
      event_.cancel(ignored);
      work_.reset();  // ctx_.run() returns once the cancelled wait has run
    }
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  unsigned depth_;
  asio::io_context ctx_{1};
  asio::posix::stream_descriptor event_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;

  std::mutex mutex_;
  std::deque<op*> pending_;    // guarded by mutex_: parked, FIFO
  bool flush_posted_ = false;  // guarded by mutex_
  bool stopping_ = false;      // guarded by mutex_

  // thread_ only (plus construction/destruction, which happen-before/after it):
  unsigned in_kernel_ = 0;
  bool unsubmitted_ = false;
  bool draining_ = false;
  bool finished_ = false;
  std::vector<std::pair<op*, int>> completed_;
};

}  // namespace

result<std::unique_ptr<backend>> make_uring_backend(const engine_options& options) {
  try {
    auto b = std::make_unique<uring_backend>(std::clamp(options.queue_depth, 1u, 4096u));
    CKPT_TRY(b->init());
    return std::unique_ptr<backend>(std::move(b));
  } catch (const std::exception& e) {
    return fail(errc::io_backend, std::string("io_uring backend: ") + e.what());
  }
}

}  // namespace ckpt::io
