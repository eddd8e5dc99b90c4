#include "pipeline/runtime_impl.hpp"

#include "io/backend.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <latch>
#include <memory>

namespace ckpt {

runtime::runtime(std::unique_ptr<impl> p) : impl_(std::move(p)) {
  impl_->thread = std::thread([this] { impl_->ctx.run(); });
}

runtime::~runtime() {
  impl_->guard.reset();
  impl_->ctx.stop();
  // The last reference may be dropped by a save or load finishing on one of our own threads
  // (after its caller has seen it complete and let go). A thread cannot join itself, so the
  // joins and the teardown move to a short-lived thread of their own.
  const bool own_thread = std::this_thread::get_id() == impl_->thread.get_id() ||
                          impl_->pool.get_executor().running_in_this_thread() ||
                          impl_->background.get_executor().running_in_this_thread();
  auto join = [](impl& p) {
    if (p.thread.joinable()) p.thread.join();
    p.pool.join();
    p.background.join();
    io::wait_for_completions_posted();  // before ctx is destroyed
  };
  if (own_thread) {
    std::thread([p = std::move(impl_), join]() mutable {
      join(*p);
      p.reset();
    }).detach();
    return;
  }
  join(*impl_);
}

result<std::shared_ptr<runtime>> runtime::create(const runtime_options& options) {
  CKPT_TRY(auto engine, io::engine::create(options.io));
  return create(std::move(engine), options);
}

result<std::shared_ptr<runtime>> runtime::create(std::shared_ptr<io::engine> engine,
                                                 const runtime_options& options) {
  if (!engine) return fail(errc::invalid_argument, "runtime::create: null engine");
  unsigned threads = options.cpu_threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  std::uint64_t budget = options.staging_budget;
  if (budget == 0) {
    std::uint64_t phys = static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                         static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    budget = std::min<std::uint64_t>(phys / 4, 8ull << 30);
    budget = std::max<std::uint64_t>(budget, 64ull << 20);
  }
  auto p = std::make_unique<impl>(std::move(engine), threads, budget);
  if (options.track_writes) p->tracker = detail::write_tracker::create();
  if (options.cpu_nice != 0) {
    // One task per thread, held at a latch until every thread has taken one. The latch is
    // shared: a worker may still be inside arrive_and_wait after this thread has moved on.
    auto all = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(threads));
    for (unsigned i = 0; i < threads; ++i) {
      boost::asio::post(p->background, [all, nice = options.cpu_nice] {
        (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
        all->arrive_and_wait();
      });
    }
    all->wait();
  }
  return std::shared_ptr<runtime>(new runtime(std::move(p)));
}

const std::shared_ptr<runtime>& runtime::global() {
  static const std::shared_ptr<runtime> rt = create().value();
  return rt;
}

boost::asio::any_io_executor runtime::executor() const {
  return impl_->ctx.get_executor();
}
io::engine& runtime::io() {
  return *impl_->engine;
}
std::uint64_t runtime::staging_budget() const noexcept {
  return impl_->staging.capacity();
}
unsigned runtime::cpu_threads() const noexcept {
  return impl_->cpu_threads;
}
bool runtime::tracks_writes() const noexcept {
  return impl_->tracker != nullptr;
}

}  // namespace ckpt
