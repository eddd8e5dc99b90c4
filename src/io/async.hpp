// Small async primitives for the pipelines: a one-shot result event that can be awaited from
// any executor or waited on by a blocking thread, a FIFO counting budget, the bounded fan-out
// (task_group) and when_all over it.
#pragma once

#include <ckpt/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace ckpt::detail {

namespace asio = boost::asio;

/// Posts `f` to `handler`'s associated executor, keeping that executor's work alive meanwhile.
template <class Handler>
auto tracked_executor(const Handler& h) {
  return asio::prefer(asio::get_associated_executor(h), asio::execution::outstanding_work.tracked);
}

/// A one-shot event carrying a result<void>. The first set() wins. Thread-safe.
class result_event {
 public:
  void set(result<void> r) {
    std::vector<std::unique_ptr<waiter>> ws;
    {
      std::lock_guard l(m_);
      if (value_) return;
      value_ = r;
      ws.swap(waiters_);
      // Notify under the lock: a blocked waiter may destroy this event as soon as it sees the
      // value, so nothing below touches `this`.
      cv_.notify_all();
    }
    for (auto& w : ws)
      w->fire(r);
  }
  bool is_set() const {
    std::lock_guard l(m_);
    return value_.has_value();
  }
  /// Blocks the calling thread until set.
  result<void> wait() const {
    std::unique_lock l(m_);
    cv_.wait(l, [&] { return value_.has_value(); });
    return *value_;
  }
  /// Blocks the calling thread until set or `timeout` passed; true when set.
  bool wait_for(std::chrono::steady_clock::duration timeout) const {
    std::unique_lock l(m_);
    return cv_.wait_for(l, timeout, [&] { return value_.has_value(); });
  }
  template <class Token>
  auto async_wait(Token&& token) {
    return asio::async_initiate<Token, void(result<void>)>(
        [this](auto handler) {
          using H = decltype(handler);
          struct w final : waiter {
            explicit w(H&& h) : ex(tracked_executor(h)), h(std::move(h)) {}
            void fire(const result<void>& r) override {
              asio::post(ex, [h = std::move(h), r]() mutable { std::move(h)(r); });
            }
            decltype(tracked_executor(std::declval<H&>())) ex;
            H h;
          };
          auto wp = std::make_unique<w>(std::move(handler));
          std::unique_lock l(m_);
          if (value_) {
            auto r = *value_;
            l.unlock();
            wp->fire(r);
            return;
          }
          waiters_.push_back(std::move(wp));
        },
        token);
  }
  asio::awaitable<result<void>> wait_async() { co_return co_await async_wait(asio::use_awaitable); }

 private:
  struct waiter {
    virtual ~waiter() = default;
    virtual void fire(const result<void>& r) = 0;
  };
  mutable std::mutex m_;
  mutable std::condition_variable cv_;
  std::optional<result<void>> value_;
  std::vector<std::unique_ptr<waiter>> waiters_;
};

/// A FIFO counting budget (bytes of staging memory, or slots). acquire(n) completes when n more
/// fit; a request larger than the capacity is granted when nothing else is held. Thread-safe.
class async_budget {
 public:
  explicit async_budget(std::uint64_t capacity) : capacity_(capacity) {}
  std::uint64_t capacity() const { return capacity_; }
  std::uint64_t in_use() const {
    std::lock_guard l(m_);
    return used_;
  }

  template <class Token>
  auto async_acquire(std::uint64_t n, Token&& token) {
    return asio::async_initiate<Token, void()>(
        [this, n](auto handler) {
          using H = decltype(handler);
          struct w final : waiter {
            explicit w(H&& h) : ex(tracked_executor(h)), h(std::move(h)) {}
            void fire() override {
              asio::post(ex, [h = std::move(h)]() mutable { std::move(h)(); });
            }
            decltype(tracked_executor(std::declval<H&>())) ex;
            H h;
          };
          auto wp = std::make_unique<w>(std::move(handler));
          std::unique_lock l(m_);
          if (waiters_.empty() && fits(n)) {
            used_ += n;
            l.unlock();
            wp->fire();
            return;
          }
          waiters_.push_back({n, std::move(wp)});
        },
        token);
  }
  asio::awaitable<void> acquire(std::uint64_t n) { co_await async_acquire(n, asio::use_awaitable); }

  void release(std::uint64_t n) {
    std::vector<std::unique_ptr<waiter>> ready;
    {
      std::lock_guard l(m_);
      used_ -= n;
      while (!waiters_.empty() && fits(waiters_.front().n)) {
        used_ += waiters_.front().n;
        ready.push_back(std::move(waiters_.front().w));
        waiters_.pop_front();
      }
    }
    for (auto& w : ready)
      w->fire();
  }

 private:
  bool fits(std::uint64_t n) const { return used_ + n <= capacity_ || used_ == 0; }
  struct waiter {
    virtual ~waiter() = default;
    virtual void fire() = 0;
  };
  struct entry {
    std::uint64_t n;
    std::unique_ptr<waiter> w;
  };
  const std::uint64_t capacity_;
  mutable std::mutex m_;
  std::uint64_t used_ = 0;
  std::deque<entry> waiters_;
};

/// Awaits `op` and stores its value in `*out` (co_spawn needs a default-constructible value).
template <class T>
asio::awaitable<void> store_into(std::optional<T>* out, asio::awaitable<T> op) {
  out->emplace(co_await std::move(op));
}

/// Runs `op` on executor `ex` and resumes the caller on its own executor with the result.
template <class T>
asio::awaitable<T> run_on(asio::any_io_executor ex, asio::awaitable<T> op) {
  std::optional<T> out;
  co_await asio::co_spawn(ex, store_into(&out, std::move(op)), asio::use_awaitable);
  co_return std::move(*out);
}

/// The one fan-out of the pipelines: tasks started on one executor and joined by wait(). The
/// group keeps the first error, admits no task after a failure or cancel(), and bounds work in
/// flight through an optional budget that a task holds from before it starts until it ends.
/// A task must own what it uses (values, shared_ptr): the group outlives none of its tasks'
/// frames but its own shared state, which the tasks keep alive.
class task_group {
 public:
  explicit task_group(asio::any_io_executor ex) : s_(std::make_shared<state>(std::move(ex))) {}
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;

  /// Awaits `cost` of `budget` (when given), then starts `op`. False, with `op` dropped and
  /// nothing held, when the group has failed or was cancelled.
  asio::awaitable<bool> spawn(asio::awaitable<result<void>> op, async_budget* budget = nullptr,
                              std::uint64_t cost = 0) {
    if (stopped()) co_return false;
    if (budget) co_await budget->acquire(cost);
    if (stopped()) {
      if (budget) budget->release(cost);
      co_return false;
    }
    {
      std::lock_guard l(s_->m);
      ++s_->running;
    }
    asio::co_spawn(s_->ex, run_task(s_, std::move(op), budget, cost),
                   [s = s_, budget, cost](std::exception_ptr e) {
                     if (!e) return;
                     if (budget) budget->release(cost);
                     s->finish(fail(errc::aborted, "internal exception in a pipeline step"));
                   });
    co_return true;
  }
  /// Records `e` as the group's error (unless one is already kept): no task is admitted after.
  void cancel(error e) { s_->record(fail(std::move(e))); }
  /// A task failed or the group was cancelled.
  bool stopped() const {
    std::lock_guard l(s_->m);
    return s_->first.has_value();
  }
  /// Waits until every started task ended (call once, after the last spawn); the first error.
  asio::awaitable<result<void>> wait() {
    {
      std::lock_guard l(s_->m);
      s_->waiting = true;
      if (s_->running == 0) s_->done.set(success());
    }
    (void)co_await s_->done.wait_async();  // (always success(): the first error is s_->first)
    std::lock_guard l(s_->m);
    if (s_->first) co_return fail(*s_->first);
    co_return success();
  }

 private:
  struct state {
    explicit state(asio::any_io_executor e) : ex(std::move(e)) {}
    asio::any_io_executor ex;
    mutable std::mutex m;
    std::size_t running = 0;
    bool waiting = false;
    std::optional<error> first;
    result_event done;
    void record(const result<void>& r) {
      std::lock_guard l(m);
      if (!r && !first) first = r.error();
    }
    void finish(const result<void>& r) {
      std::lock_guard l(m);
      if (!r && !first) first = r.error();
      if (--running == 0 && waiting) done.set(success());
    }
  };
  static asio::awaitable<void> run_task(std::shared_ptr<state> s, asio::awaitable<result<void>> op,
                                        async_budget* budget, std::uint64_t cost) {
    result<void> r = co_await std::move(op);
    if (budget) budget->release(cost);
    s->finish(r);
  }
  std::shared_ptr<state> s_;
};

/// Runs the awaitables concurrently on `ex` and returns the first error, once every one started
/// has finished (after a failure the ones not yet started are dropped).
inline asio::awaitable<result<void>> when_all(asio::any_io_executor ex,
                                              std::vector<asio::awaitable<result<void>>> ops) {
  task_group g(std::move(ex));
  for (auto& op : ops) {
    const bool started = co_await g.spawn(std::move(op));
    if (!started) break;
  }
  co_return co_await g.wait();
}

/// Runs `op` on `ex` from a thread that is not one of `ex`'s and blocks for its result.
template <class T>
T run_blocking(asio::any_io_executor ex, asio::awaitable<T> op) {
  std::optional<T> out;
  result_event done;
  std::exception_ptr err;
  asio::co_spawn(ex, store_into(&out, std::move(op)), [&](std::exception_ptr e) {
    err = e;
    done.set(success());
  });
  (void)done.wait();
  if (err) std::rethrow_exception(err);
  return std::move(*out);
}

}  // namespace ckpt::detail
