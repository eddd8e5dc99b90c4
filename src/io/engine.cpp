// The io engine: awaitable file operations over a backend (io_uring or a thread pool).
//
// Lifecycle and threads
// ---------------------
// engine::create picks a backend (options.backend; `automatic` reads CKPT_IO_BACKEND=uring|threads
// and otherwise tries io_uring and falls back to threads) and wraps it in a shared `core`. Every
// operation coroutine copies the shared_ptr to the core when it starts, so the backend object
// outlives every coroutine that may still submit to it, even after the engine is gone.
//
// An operation is one or more raw requests. Each request becomes a heap `await_op` that holds
// the awaiting coroutine's handler and a work guard on its executor; the backend completes it
// from its own thread, and `await_op::complete` posts the handler (with `res`) to the
// coroutine's associated executor: coroutines always resume on their own executor, never on the
// ring's thread. Above the backend the engine resubmits the remainder of short reads/writes
// (a read that returns 0 is end of file; an O_DIRECT read that stops at an unaligned offset is
// too), falls back from O_DIRECT when open says EINVAL, and turns -errno into a ckpt::error
// naming the op, path and offset.
//
// The io_uring ring (uring_backend.cpp): created by make_uring_backend (io_uring_queue_init,
// an eventfd registered with io_uring_register_eventfd, a private io_context waiting on the
// eventfd through posix::stream_descriptor, and one thread running that context). Only that
// thread touches the ring: it preps SQEs, calls io_uring_submit, and reaps all CQEs on each
// eventfd wakeup. `submit` (any thread) appends the op to a FIFO under a mutex and posts one
// flush to the private context per batch; a flush moves parked ops into the ring while fewer
// than queue_depth are in the kernel and submits them with ONE io_uring_submit. After each
// reap the freed slots are refilled the same way. user_data is the op pointer.
//
// Shutdown (~engine -> backend::shutdown, from any thread but a completion): parked ops are
// completed with -ECANCELED (errc::cancelled) at once, new submits are cancelled at once, an
// IORING_ASYNC_CANCEL_ANY is submitted, and the ring thread keeps reaping until no op is left
// in the kernel; then it stops and is joined. The ring is torn down (io_uring_queue_exit) when
// the last coroutine holding the core lets go of it, by which time nothing references it.
//
// Safe from any thread: engine::create, every engine operation, backend_name, ~engine (not from
// inside a completion handler running on the backend's thread, which user code never sees).
#include "io/backend.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>
#include <type_traits>

namespace ckpt::io {

std::string_view to_string(op_kind k) noexcept {
  switch (k) {
    case op_kind::open:
      return "open";
    case op_kind::close:
      return "close";
    case op_kind::read:
      return "read";
    case op_kind::write:
      return "write";
    case op_kind::fsync:
      return "fsync";
    case op_kind::fdatasync:
      return "fdatasync";
    case op_kind::fallocate:
      return "fallocate";
    case op_kind::ftruncate:
      return "ftruncate";
    case op_kind::statx:
      return "statx";
    case op_kind::mkdir:
      return "mkdir";
    case op_kind::rename:
      return "rename";
    case op_kind::unlink:
      return "unlink";
    case op_kind::link:
      return "link";
  }
  return "?";
}

namespace {

// Completions being posted right now, by any engine (see wait_for_completions_posted()).
std::atomic<long> posting{0};
// A forked child has none of the parent's threads, so a post in flight at the fork never ends
// there: without this a child that makes its own runtime waits for it forever when it drops it
// (found by the hostile-load tests, which fork right after a save).
[[maybe_unused]] const int posting_reset_in_child =
    ::pthread_atfork(nullptr, nullptr, [] { posting.store(0, std::memory_order_relaxed); });

/// The op that resumes a coroutine: completion posts the handler to its own executor.
template <class Handler>
class await_op final : public op {
 public:
  await_op(const request& r, Handler&& h)
      : op(r),
        handler_(std::move(h)),
        work_(asio::make_work_guard(asio::get_associated_executor(handler_))) {}

  void complete(int res) noexcept override {
    auto handler = std::move(handler_);
    auto work = std::move(work_);
    delete this;
    auto ex = work.get_executor();
    // The guard travels with the handler: released here, on the ring's thread, it could race
    // with the handler letting go of the last reference to the context it guards.
    // The post may still be inside the context's wake-up call when the handler has already run
    // and let go of that context: `posting` lets its owner wait for the call to return.
    posting.fetch_add(1, std::memory_order_relaxed);
    asio::post(ex,
               [h = std::move(handler), w = std::move(work), res]() mutable { std::move(h)(res); });
    posting.fetch_sub(1, std::memory_order_release);
  }

 private:
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> work_;
};

struct initiate_op {
  template <class Handler>
  void operator()(Handler&& handler) const {
    using h_type = std::decay_t<Handler>;
    b->submit(new await_op<h_type>(r, std::move(handler)));
  }
  backend* b;
  request r;
};

/// Submits one raw request and awaits its `res`.
auto raw(backend& b, const request& r) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(int)>(initiate_op{&b, r},
                                                                         asio::use_awaitable);
}

ckpt::error op_error(int res, std::string message) {
  if (res == -ECANCELED)
    return {errc::cancelled, std::move(message) + ": cancelled (engine shut down)"};
  return system_error(-res, std::move(message));
}

std::string file_label(const file& f) {
  return f.name.empty() ? "<fd " + std::to_string(f.fd) + ">" : f.name;
}

std::string at_offset(std::string_view what, const file& f, std::uint64_t offset) {
  return std::string(what) + " " + file_label(f) + " at offset " + std::to_string(offset);
}

}  // namespace

void wait_for_completions_posted() noexcept {
  while (posting.load(std::memory_order_acquire) != 0)
    std::this_thread::yield();
}

struct core {
  std::unique_ptr<backend> b;
  ~core() {
    if (b) b->shutdown();
  }
};

struct engine::impl {
  std::shared_ptr<core> c;
};

engine::engine(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

engine::~engine() {
  if (impl_ && impl_->c) impl_->c->b->shutdown();
}

result<std::shared_ptr<engine>> make_engine(std::unique_ptr<backend> b) {
  if (!b) return fail(errc::invalid_argument, "io engine: no backend");
  auto c = std::make_shared<core>();
  c->b = std::move(b);
  auto p = std::make_unique<engine::impl>();
  p->c = std::move(c);
  return std::shared_ptr<engine>(new engine(std::move(p)));
}

result<std::shared_ptr<engine>> engine::create(const engine_options& options) {
  backend_kind kind = options.backend;
  if (kind == backend_kind::automatic) {
    if (const char* env = std::getenv("CKPT_IO_BACKEND"); env != nullptr && *env != '\0') {
      std::string_view v(env);
      if (v == "uring") {
        kind = backend_kind::uring;
      } else if (v == "threads") {
        kind = backend_kind::threads;
      } else if (v != "auto" && v != "automatic") {
        return fail(errc::invalid_argument,
                    "CKPT_IO_BACKEND=" + std::string(v) + ": expected uring, threads or auto");
      }
    }
  }
  std::unique_ptr<backend> b;
  switch (kind) {
    case backend_kind::uring: {
      CKPT_TRY_CTX(b, make_uring_backend(options), "io engine");
      break;
    }
    case backend_kind::threads: {
      CKPT_TRY_CTX(b, make_thread_backend(options), "io engine");
      break;
    }
    case backend_kind::automatic: {
      auto u = make_uring_backend(options);
      if (u) {
        b = std::move(u).value();
      } else {
        CKPT_TRY_CTX(b, make_thread_backend(options), "io engine");
      }
      break;
    }
  }
  return make_engine(std::move(b));
}

std::string_view engine::backend_name() const noexcept {
  return impl_->c->b->name();
}

asio::awaitable<result<file>> engine::open(int dirfd, std::string path, int flags, mode_t mode) {
  auto c = impl_->c;
  request r{.kind = op_kind::open,
            .dirfd = dirfd,
            .path = path.c_str(),
            .flags = flags,
            .mode = mode,
            .file_name = path};
  int res = co_await raw(*c->b, r);
  bool direct = (flags & O_DIRECT) != 0;
  if (res == -EINVAL && direct) {
    // The file system refuses O_DIRECT (e.g. an old tmpfs): buffered IO instead.
    direct = false;
    r.flags = flags & ~O_DIRECT;
    res = co_await raw(*c->b, r);
    if (res == -EEXIST && (flags & O_CREAT) && (flags & O_EXCL)) {
      // The refused open had already created the file before failing on O_DIRECT.
      r.flags &= ~O_EXCL;
      res = co_await raw(*c->b, r);
    }
  }
  if (res < 0) co_return fail(op_error(res, "open " + path));
  co_return file{.fd = res, .direct = direct, .name = std::move(path)};
}

asio::awaitable<result<void>> engine::close(file f) {
  auto c = impl_->c;
  int res = co_await raw(*c->b, {.kind = op_kind::close, .fd = f.fd, .file_name = f.name});
  if (res < 0) co_return fail(op_error(res, "close " + file_label(f)));
  co_return success();
}

asio::awaitable<result<void>> engine::write(const file& f, std::span<const std::byte> data,
                                            std::uint64_t offset) {
  auto c = impl_->c;
  std::size_t done = 0;
  while (done < data.size()) {
    std::uint64_t len = std::min<std::uint64_t>(data.size() - done, max_transfer);
    request r{.kind = op_kind::write,
              .fd = f.fd,
              .buffer = const_cast<std::byte*>(data.data() + done),
              .length = len,
              .offset = offset + done,
              .file_name = f.name};
    int res = co_await raw(*c->b, r);
    if (res < 0) co_return fail(op_error(res, at_offset("write", f, offset + done)));
    if (res == 0)
      co_return fail(system_error(EIO, at_offset("write", f, offset + done) + ": wrote nothing"));
    done += static_cast<std::size_t>(res);
  }
  co_return success();
}

asio::awaitable<result<std::size_t>> engine::read(const file& f, std::span<std::byte> data,
                                                  std::uint64_t offset) {
  auto c = impl_->c;
  std::size_t done = 0;
  while (done < data.size()) {
    std::uint64_t len = std::min<std::uint64_t>(data.size() - done, max_transfer);
    request r{.kind = op_kind::read,
              .fd = f.fd,
              .buffer = data.data() + done,
              .length = len,
              .offset = offset + done,
              .file_name = f.name};
    int res = co_await raw(*c->b, r);
    if (res < 0) co_return fail(op_error(res, at_offset("read", f, offset + done)));
    if (res == 0) break;  // end of file
    done += static_cast<std::size_t>(res);
    // O_DIRECT reads stop short only at end of file (or error); an unaligned continuation
    // would be refused with EINVAL, so that is the end.
    if (f.direct && static_cast<std::uint64_t>(res) < len && ((offset + done) % 512) != 0) break;
  }
  co_return done;
}

asio::awaitable<result<void>> engine::fsync(const file& f, bool datasync) {
  auto c = impl_->c;
  request r{
      .kind = datasync ? op_kind::fdatasync : op_kind::fsync, .fd = f.fd, .file_name = f.name};
  int res = co_await raw(*c->b, r);
  if (res < 0)
    co_return fail(op_error(res, std::string(datasync ? "fdatasync " : "fsync ") + file_label(f)));
  co_return success();
}

asio::awaitable<result<void>> engine::fallocate(const file& f, int mode, std::uint64_t offset,
                                                std::uint64_t length) {
  auto c = impl_->c;
  request r{.kind = op_kind::fallocate,
            .fd = f.fd,
            .length = length,
            .offset = offset,
            .flags = mode,
            .file_name = f.name};
  int res = co_await raw(*c->b, r);
  if (res < 0) {
    co_return fail(
        op_error(res, at_offset("fallocate", f, offset) + " length " + std::to_string(length)));
  }
  co_return success();
}

asio::awaitable<result<void>> engine::ftruncate(const file& f, std::uint64_t size) {
  auto c = impl_->c;
  request r{.kind = op_kind::ftruncate, .fd = f.fd, .length = size, .file_name = f.name};
  int res = co_await raw(*c->b, r);
  if (res < 0)
    co_return fail(op_error(res, "ftruncate " + file_label(f) + " to " + std::to_string(size)));
  co_return success();
}

asio::awaitable<result<struct statx>> engine::statx(int dirfd, std::string path, int flags,
                                                    unsigned mask) {
  auto c = impl_->c;
  struct statx out {};
  request r{.kind = op_kind::statx,
            .dirfd = dirfd,
            .path = path.c_str(),
            .flags = flags,
            .mode = mask,
            .statx_out = &out,
            .file_name = path};
  int res = co_await raw(*c->b, r);
  if (res < 0) co_return fail(op_error(res, "statx " + path));
  co_return out;
}

asio::awaitable<result<void>> engine::mkdir(int dirfd, std::string path, mode_t mode) {
  auto c = impl_->c;
  request r{.kind = op_kind::mkdir,
            .dirfd = dirfd,
            .path = path.c_str(),
            .mode = mode,
            .file_name = path};
  int res = co_await raw(*c->b, r);
  if (res < 0) co_return fail(op_error(res, "mkdir " + path));
  co_return success();
}

asio::awaitable<result<void>> engine::rename(int old_dirfd, std::string old_path, int new_dirfd,
                                             std::string new_path, unsigned flags) {
  auto c = impl_->c;
  request r{.kind = op_kind::rename,
            .dirfd = old_dirfd,
            .dirfd2 = new_dirfd,
            .path = old_path.c_str(),
            .path2 = new_path.c_str(),
            .flags = static_cast<int>(flags),
            .file_name = old_path};
  int res = co_await raw(*c->b, r);
  if (res < 0) co_return fail(op_error(res, "rename " + old_path + " to " + new_path));
  co_return success();
}

asio::awaitable<result<void>> engine::unlink(int dirfd, std::string path, int flags) {
  auto c = impl_->c;
  request r{.kind = op_kind::unlink,
            .dirfd = dirfd,
            .path = path.c_str(),
            .flags = flags,
            .file_name = path};
  int res = co_await raw(*c->b, r);
  if (res < 0) co_return fail(op_error(res, "unlink " + path));
  co_return success();
}

asio::awaitable<result<void>> engine::link(int old_dirfd, std::string old_path, int new_dirfd,
                                           std::string new_path) {
  auto c = impl_->c;
  request r{.kind = op_kind::link,
            .dirfd = old_dirfd,
            .dirfd2 = new_dirfd,
            .path = old_path.c_str(),
            .path2 = new_path.c_str(),
            .file_name = old_path};
  int res = co_await raw(*c->b, r);
  if (res < 0) co_return fail(op_error(res, "link " + old_path + " to " + new_path));
  co_return success();
}

}  // namespace ckpt::io
