#include "runtime_impl.hpp"

#include <unistd.h>

#include <algorithm>

namespace ckpt {

runtime::runtime(std::unique_ptr<impl> p) : impl_(std::move(p)) {
  impl_->thread = std::thread([this] { impl_->ctx.run(); });
}

runtime::~runtime() {
  impl_->guard.reset();
  impl_->ctx.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->pool.join();
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
  return std::shared_ptr<runtime>(new runtime(std::move(p)));
}

const std::shared_ptr<runtime>& runtime::global() {
  static const std::shared_ptr<runtime> rt = create().value();
  return rt;
}

boost::asio::any_io_executor runtime::executor() const {
  return impl_->ctx.get_executor();
}
boost::asio::thread_pool& runtime::cpu_pool() {
  return impl_->pool;
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

}  // namespace ckpt
