// The benchmarks as functions, so that `ckpt-perf report` runs the same code as the
// subcommands. Each returns the JSON its subcommand prints with --json; print_* writes the
// human report (method line first) from that JSON.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/runtime.hpp>
#include <ckpt/tree.hpp>

#include <boost/json/object.hpp>

#include <string>

namespace ckpt::perf {

struct save_load_config {
  std::string workload;
  std::string dir;
  int runs = 1;
  bool fio = true;  ///< fio baseline too, when installed
  bool raw = true;  ///< raw O_DIRECT io_uring baseline, alternated with our runs
  /// Each timed save or load in a fresh process (`ckpt-perf-child save|load`, which links
  /// libckpt alone and builds the tree (save) or the destination (load): it pays first-touch
  /// costs as a user does, and its peak RSS holds no library ckpt does not need);
  /// false (--warm): in this process, after a pre-fault.
  bool fresh = true;
};

/// Durable saves of `t` (owned leaves), each preceded by the baselines.
result<boost::json::object> bench_save(const save_load_config& c, const tree& t);
/// Cold loads of a checkpoint of `t` into pre-touched buffers, each preceded by the baselines.
result<boost::json::object> bench_load(const save_load_config& c, const tree& t);
void print_save(const boost::json::object& j);
void print_load(const boost::json::object& j);

enum class leaf_mode { borrowed, shared };

struct train_config {
  std::string workload = "dense";
  std::string dir = "/work/perfdir-perf";
  double step_ms = 200;
  int every = 10;
  int steps = 45;
  int runs = 1;
  unsigned cpu_threads = 0;          ///< encoder threads; 0: cores (borrowed), cores - 1 (shared)
  std::uint64_t staging_budget = 0;  ///< runtime_options::staging_budget; 0: its default
  std::uint64_t base_rss = 0;  ///< the process's RSS before the workload was built (rss_bytes)
  leaf_mode mode = leaf_mode::borrowed;
};

/// The simulated training loop with async checkpoints (see train_bench.cpp). `t` is the
/// workload with owned leaves; it is updated in place.
result<boost::json::object> bench_train(const train_config& c, tree& t);
void print_train(const boost::json::object& j);

}  // namespace ckpt::perf
