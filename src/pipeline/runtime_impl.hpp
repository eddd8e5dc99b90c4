// What a runtime holds (internal).
#pragma once

#include "io/async.hpp"
#include "pipeline/buffer_pool.hpp"
#include "pipeline/write_tracker.hpp"

#include <ckpt/runtime.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <memory>
#include <thread>

namespace ckpt {

struct runtime::impl {
  impl(std::shared_ptr<io::engine> e, unsigned threads, std::uint64_t budget)
      : engine(std::move(e)),
        pool(threads),
        background(threads),
        cpu_threads(threads),
        staging(budget),
        buffers(budget) {}

  std::shared_ptr<io::engine> engine;
  boost::asio::io_context ctx{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{
      ctx.get_executor()};
  std::thread thread;
  boost::asio::thread_pool pool;        // capture, decode, verify: someone waits on these
  boost::asio::thread_pool background;  // encoding after staged, at runtime_options::cpu_nice
  unsigned cpu_threads;
  detail::async_budget staging;
  detail::buffer_pool buffers;
  std::unique_ptr<detail::write_tracker> tracker;  // runtime_options::track_writes
};

namespace detail {
/// The library's way into the public classes' private parts (declared a friend by each).
struct access {
  using runtime_impl = runtime::impl;
  static runtime_impl& internals(runtime& r) noexcept { return *r.impl_; }
  template <class Handle, class State>
  static Handle handle(std::shared_ptr<State> s) {
    return Handle(std::move(s));
  }
};
using runtime_internals = access::runtime_impl;
}  // namespace detail

/// The runtime to use for options that may name none.
inline std::shared_ptr<runtime> runtime_or_global(const std::shared_ptr<runtime>& rt) {
  return rt ? rt : runtime::global();
}

}  // namespace ckpt
