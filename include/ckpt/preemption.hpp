// ckpt/preemption.hpp - turning a preemption notice (SIGTERM) into a bounded end of the save in
// flight.
//
// Schedulers (Kubernetes, Slurm, spot instances) send SIGTERM and kill the process a grace
// period later. A training loop that checkpoints asynchronously then has one question: can the
// save in flight still commit in time? `preemption_guard` answers it:
//
//   ckpt::preemption_guard guard;                  // SIGTERM now sets a flag instead of killing
//   for (step...) {
//     ...train...
//     if (guard.requested()) {
//       auto r = guard.finish_or_abandon(pending, std::chrono::seconds(20));
//       if (r) job.register_latest_blocking(suffix);  // committed in time: the new LATEST
//       return 0;                                  // else: cancelled, the previous LATEST stands
//     }
//   }
//
// `finish_or_abandon` waits for the save to commit until the deadline; past it, it cancels the
// save (save_handle::cancel: before the final rename the save aborts and removes its temporary
// directory) and waits for it to end. Either way the job directory holds only committed
// checkpoints, and LATEST (never touched here) names one of them. Register the checkpoint only
// when the result is success.
//
// One guard per process at a time; it restores the previous signal handlers when destroyed.
// The handler only stores to a lock-free atomic (async-signal-safe).
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/save.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <initializer_list>
#include <utility>
#include <vector>

namespace ckpt {

class preemption_guard {
 public:
  /// Installs the handler for `signals` (default SIGTERM).
  explicit preemption_guard(std::initializer_list<int> signals = {SIGTERM}) {
    flag().store(false);
    for (int s : signals) {
      struct sigaction sa {};
      sa.sa_handler = &preemption_guard::on_signal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      struct sigaction old {};
      if (::sigaction(s, &sa, &old) == 0) previous_.emplace_back(s, old);
    }
  }
  ~preemption_guard() {
    for (auto& [s, old] : previous_)
      ::sigaction(s, &old, nullptr);
  }
  preemption_guard(const preemption_guard&) = delete;
  preemption_guard& operator=(const preemption_guard&) = delete;

  /// True once one of the signals arrived (or request() was called).
  bool requested() const noexcept { return flag().load(std::memory_order_relaxed); }
  /// Marks preemption as requested (tests, or a scheduler's HTTP notice).
  static void request() noexcept { flag().store(true, std::memory_order_relaxed); }

  /// Waits until `save` is done or `deadline` has passed; past the deadline cancels it and waits
  /// for it to end. Returns the save's result: success (committed), `errc::cancelled`
  /// (abandoned; nothing visible was left) or its own error. Blocking: do not call it from the
  /// runtime's threads.
  static result<void> finish_or_abandon(const save_handle& save,
                                        std::chrono::steady_clock::duration deadline) {
    if (!save.wait_done_for(deadline)) save.cancel();
    return save.wait_committed();
  }

 private:
  static std::atomic<bool>& flag() noexcept {
    static std::atomic<bool> f{false};
    return f;
  }
  static void on_signal(int) noexcept { flag().store(true, std::memory_order_relaxed); }
  std::vector<std::pair<int, struct sigaction>> previous_;
};

}  // namespace ckpt
