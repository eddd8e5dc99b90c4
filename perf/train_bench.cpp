// ckpt-perf train: a simulated training loop with asynchronous checkpoints.
//
//   ckpt-perf train --workload W --step-ms MS --every K [--steps N] [--runs R]
//                   [--leaf-mode borrowed|shared|both] [--dir DIR] [--cpu-threads T]
//                   [--budget BYTES] [--json]
//
// --steps defaults to 4K + K/2 (four checkpoints, the last one written during the tail);
// --cpu-threads defaults to all cores for borrowed leaves, all but one for shared ones.
//
// Method: the workload's float32 leaves are the model state. A step is an axpy-like pass
// (x = a*x + b, in place) over the next slice of all f32 elements, the slice sized by a one-off
// untimed calibration so that a step takes about MS ms. Every K steps the loop waits for the
// previous checkpoint's commit (and deletes it), calls start_save(DIR/step_<i>) and blocks in
// wait_staged(): the stall is the time from the call until wait_staged() returns. Then it keeps
// stepping while the checkpoint is written. At the end it waits for the last commit (counted).
// Each run alternates a loop of the same N steps without checkpoints (the baseline wall and step
// time) with the loop with checkpoints; 2x the tree's bytes are pre-faulted before each, and the
// runtime's staging memory once (reserve_staging) before the first run. --budget sets the
// runtime's staging budget: below the tree's size `staged` waits for writes to free buffers (the
// stall grows, the memory does not). Peak RSS is the process's during the loops with
// checkpoints (the memcpy floor's destination is freed by then).
//  - borrowed: the save gets array::borrow views of the live buffers (it must capture them, on
//    its CPU pool, before staged). The floor is memcpy_ms: one single-threaded memcpy of the
//    tree into pre-faulted memory, measured in the same run.
//  - shared: the loop holds two copies of the state (A, B). At a checkpoint it hands the live
//    copy A to the save as array::share leaves (frozen until committed) and goes on updating
//    B; at the next checkpoint (A committed by then) it swaps. Keeping B current with A is not
//    modelled: in a framework whose updates are out of place that is part of the step.
// step_inflation = mean step time while a checkpoint is in flight / mean step time of the
// baseline loop. overhead_pct = (wall with checkpoints - baseline wall) / baseline wall.
#include "bench_util.hpp"
#include "benches.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include <ckpt/save.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ckpt::perf {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

long minor_faults() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

/// CPU time of a clock (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID) in ms.
double cpu_ms(clockid_t id) {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

/// The f32 elements of one copy of the state, as spans, walked by a cursor.
struct f32_state {
  std::vector<std::span<float>> spans;
  std::uint64_t total = 0;
};

f32_state f32_spans(const std::vector<array>& leaves) {
  f32_state s;
  for (const auto& a : leaves) {
    if (a.dtype() != dtype::f32 || a.num_elements() == 0) continue;
    s.spans.push_back(a.as_mutable<float>());
    s.total += a.num_elements();
  }
  return s;
}

/// x = a*x + b over `count` elements starting at element `cursor` of the concatenation,
/// wrapping around. Returns the new cursor.
std::uint64_t step_kernel(const f32_state& s, std::uint64_t cursor, std::uint64_t count) {
  constexpr float a = 0.99999f, b = 1e-9f;
  std::size_t idx = 0;
  std::uint64_t base = 0;
  cursor %= s.total;
  while (base + s.spans[idx].size() <= cursor)
    base += s.spans[idx++].size();
  while (count > 0) {
    auto sp = s.spans[idx];
    std::uint64_t off = cursor - base;
    std::uint64_t n = std::min<std::uint64_t>(count, sp.size() - off);
    float* x = sp.data() + off;
    for (std::uint64_t i = 0; i < n; ++i)
      x[i] = a * x[i] + b;
    count -= n;
    cursor += n;
    if (off + n == sp.size()) {
      base += sp.size();
      if (++idx == s.spans.size()) idx = 0, base = 0, cursor = 0;
    }
  }
  return cursor;
}

/// Elements per step so that a step takes about `step_ms` (untimed calibration).
std::uint64_t calibrate(const f32_state& s, double step_ms) {
  const std::uint64_t probe = std::min<std::uint64_t>(s.total, 32ull << 20);
  double best = 1e30;
  std::uint64_t cursor = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = clock_type::now();
    cursor = step_kernel(s, cursor, probe);
    best = std::min(best, ms_since(t0));
  }
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(double(probe) / best * step_ms));
}

/// One single-threaded memcpy of every leaf into `dst` (pre-faulted); milliseconds.
/// Median of three; `cpu` gets the median thread CPU time (immune to preemption).
double memcpy_ms(const std::vector<array>& leaves, aligned_buffer& dst, double* cpu) {
  std::vector<double> reps, cpus;
  for (int r = 0; r < 3; ++r) {
    const double c0 = cpu_ms(CLOCK_THREAD_CPUTIME_ID);
    auto t0 = clock_type::now();
    std::uint64_t off = 0;
    for (const auto& a : leaves) {
      auto b = a.bytes();
      std::memcpy(dst.data() + off, b.data(), b.size());
      off += b.size();
    }
    reps.push_back(ms_since(t0));
    cpus.push_back(cpu_ms(CLOCK_THREAD_CPUTIME_ID) - c0);
  }
  *cpu = summarize(cpus).median;
  return summarize(reps).median;
}

struct loop_result {
  double wall_s = 0;
  std::vector<double> step_ms;
  std::vector<bool> in_flight;
  std::vector<double> stall_ms;
  std::vector<double> stall_cpu_ms;  // process CPU time during the stall (the loop is blocked)
  std::vector<double> stall_faults;  // minor page faults of the process during the stall
  std::vector<double> commit_wait_ms;
  std::vector<save_stats> stats;
  double final_wait_ms = 0;
};

/// The views of copy `leaves` a save gets in `mode`.
tree view_of(const tree& structure, const std::vector<array>& leaves, leaf_mode mode) {
  std::vector<array> views;
  views.reserve(leaves.size());
  for (const auto& a : leaves) {
    if (mode == leaf_mode::borrowed) {
      views.push_back(array::borrow(a.dtype(), a.shape(), a.bytes()).value());
    } else {
      views.push_back(array::share(a.dtype(), a.shape(), a.owner(), a.bytes()).value());
    }
  }
  return unflatten(structure, std::move(views)).value();
}

result<loop_result> run_loop(const train_config& c, const tree& structure,
                             std::vector<std::vector<array>>& copies, std::uint64_t per_step,
                             const std::shared_ptr<runtime>& rt, bool checkpoints) {
  loop_result out;
  std::vector<f32_state> states;
  for (auto& cp : copies)
    states.push_back(f32_spans(cp));
  std::size_t live = 0;
  std::uint64_t cursor = 0;
  std::optional<save_handle> pending;
  fs::path pending_path;
  auto finish_pending = [&]() -> result<void> {
    if (!pending) return success();
    auto t0 = clock_type::now();
    auto r = pending->wait_committed();
    double waited = ms_since(t0);
    if (!r) return fail(std::move(r).error());
    out.commit_wait_ms.push_back(waited);
    out.stats.push_back(pending->stats());
    pending.reset();
    std::error_code ec;
    fs::remove_all(pending_path, ec);
    return success();
  };
  const auto t_start = clock_type::now();
  for (int i = 1; i <= c.steps; ++i) {
    out.in_flight.push_back(pending && !pending->is_done());
    auto t0 = clock_type::now();
    cursor = step_kernel(states[live], cursor, per_step);
    out.step_ms.push_back(ms_since(t0));
    if (!checkpoints || i % c.every != 0) continue;
    CKPT_TRY(finish_pending());
    const std::size_t frozen = live;
    tree view = view_of(structure, copies[frozen], c.mode);
    if (c.mode == leaf_mode::shared) live = (live + 1) % copies.size();
    pending_path = fs::path(c.dir) / ("step_" + std::to_string(i));
    std::error_code ec;
    fs::remove_all(pending_path, ec);
    const double c0 = cpu_ms(CLOCK_PROCESS_CPUTIME_ID);
    const long f0 = minor_faults();
    auto t_save = clock_type::now();
    save_options so;
    so.runtime = rt;
    pending = start_save(pending_path, view, {{"step", i}}, std::move(so));
    auto st = pending->wait_staged();
    out.stall_ms.push_back(ms_since(t_save));
    out.stall_cpu_ms.push_back(cpu_ms(CLOCK_PROCESS_CPUTIME_ID) - c0);
    out.stall_faults.push_back(static_cast<double>(minor_faults() - f0));
    if (!st) return fail(std::move(st).error());
  }
  auto t_end = clock_type::now();
  CKPT_TRY(finish_pending());
  if (checkpoints && !out.commit_wait_ms.empty() && c.steps % c.every == 0) {
    out.final_wait_ms = out.commit_wait_ms.back();
  } else if (checkpoints && !out.commit_wait_ms.empty()) {
    out.final_wait_ms = ms_since(t_end);
  }
  out.wall_s = std::chrono::duration<double>(clock_type::now() - t_start).count();
  return out;
}

const char* mode_name(leaf_mode m) {
  return m == leaf_mode::borrowed ? "borrowed" : "shared";
}

}  // namespace

result<boost::json::object> bench_train(const train_config& c, tree& t) {
  fs::create_directories(c.dir);
  const tree structure = t;
  std::vector<std::vector<array>> copies(1);
  for (auto& fl : t.flatten())
    copies[0].push_back(fl.array);
  if (f32_spans(copies[0]).total == 0) {
    return fail(errc::invalid_argument, "workload has no f32 leaves to train");
  }
  const std::uint64_t bytes = t.num_bytes();
  if (c.mode == leaf_mode::shared) {
    // The second copy of the state (untimed).
    std::vector<array> b;
    for (const auto& a : copies[0]) {
      auto buf = aligned_buffer::for_array(a.num_bytes());
      if (buf.size()) std::memcpy(buf.data(), a.bytes().data(), buf.size());
      b.push_back(array::adopt(a.dtype(), a.shape(), std::move(buf)).value());
    }
    copies.push_back(std::move(b));
  }
  const std::uint64_t per_step = calibrate(f32_spans(copies[0]), c.step_ms);
  // Encoder threads: all cores for borrowed leaves (the loop is blocked while they capture);
  // one core left to the loop for shared leaves (they are encoded while it steps).
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const unsigned cpu_threads =
      c.cpu_threads ? c.cpu_threads
                    : (c.mode == leaf_mode::shared ? std::max(1u, cores - 1) : cores);
  runtime_options ro;
  ro.cpu_threads = cpu_threads;
  ro.staging_budget = c.staging_budget;
  auto rt = runtime::create(ro);
  if (!rt) return fail(std::move(rt).error());
  // As a training job would at start-up: staging memory faulted in once (untimed), like the
  // memcpy floor's pre-faulted destination.
  {
    save_options so;
    so.runtime = rt.value();
    reserve_staging(view_of(structure, copies[0], c.mode), so);
  }

  std::vector<double> stalls, stall_cpus, stall_faults, memcpy_cpus, memcpys, inflation, overhead,
      overhead_steady, inflight_ms, quiet_ms, base_ms, wall_with, wall_without, commit_waits;
  std::vector<save_stats> all_stats;
  std::uint64_t peak = 0;
  for (int r = 0; r < c.runs; ++r) {
    {
      // (Freed before the loops, so that it is not in their peak RSS.)
      aligned_buffer copy_dst(bytes);
      std::memset(copy_dst.data(), 0, copy_dst.size());
      double mcpu = 0;
      memcpys.push_back(memcpy_ms(copies[0], copy_dst, &mcpu));
      memcpy_cpus.push_back(mcpu);
    }
    prefault(2 * bytes);
    auto base = run_loop(c, structure, copies, per_step, rt.value(), false);
    if (!base) return fail(std::move(base).error());
    prefault(2 * bytes);
    reset_peak_rss();
    auto with = run_loop(c, structure, copies, per_step, rt.value(), true);
    peak = std::max(peak, peak_rss_bytes());
    if (!with) return fail(std::move(with).error());
    const auto& w = with.value();
    stalls.insert(stalls.end(), w.stall_ms.begin(), w.stall_ms.end());
    stall_cpus.insert(stall_cpus.end(), w.stall_cpu_ms.begin(), w.stall_cpu_ms.end());
    stall_faults.insert(stall_faults.end(), w.stall_faults.begin(), w.stall_faults.end());
    commit_waits.insert(commit_waits.end(), w.commit_wait_ms.begin(), w.commit_wait_ms.end());
    all_stats.insert(all_stats.end(), w.stats.begin(), w.stats.end());
    std::vector<double> fl, qu;
    for (std::size_t i = 0; i < w.step_ms.size(); ++i)
      (w.in_flight[i] ? fl : qu).push_back(w.step_ms[i]);
    const double base_mean = mean_of(base.value().step_ms);
    base_ms.push_back(base_mean);
    if (!fl.empty()) inflight_ms.push_back(mean_of(fl));
    if (!qu.empty()) quiet_ms.push_back(mean_of(qu));
    if (!fl.empty()) inflation.push_back(mean_of(fl) / base_mean);
    const double bw = base.value().wall_s;
    wall_without.push_back(bw);
    wall_with.push_back(w.wall_s);
    overhead.push_back((w.wall_s - bw) / bw * 100.0);
    overhead_steady.push_back((w.wall_s - w.final_wait_ms / 1000.0 - bw) / bw * 100.0);
  }
  const spread stall = summarize(stalls);
  const spread mc = summarize(memcpys);
  std::vector<double> st_staged, st_capture, st_encode, st_written, st_fsync, st_commit,
      st_committed;
  for (const auto& s : all_stats) {
    st_staged.push_back(s.staged_s);
    st_capture.push_back(s.capture_s);
    st_encode.push_back(s.encode_s);
    st_written.push_back(s.written_s);
    st_fsync.push_back(s.fsync_s);
    st_commit.push_back(s.commit_s);
    st_committed.push_back(s.committed_s);
  }
  boost::json::array stall_list;
  for (double s : stalls)
    stall_list.push_back(s);
  boost::json::object j{
      {"bench", "train"},
      {"workload", c.workload},
      {"leaf_mode", mode_name(c.mode)},
      {"method",
       std::string("simulated loop: in-place axpy over a slice of the f32 leaves sized to ") +
           std::to_string(static_cast<int>(c.step_ms)) + " ms/step, start_save every " +
           std::to_string(c.every) + " steps (" + mode_name(c.mode) + " leaves, " +
           std::to_string(cpu_threads) +
           " encoder thread(s)), stall = start_save call -> wait_staged() return; memcpy = "
           "single-threaded "
           "copy of the tree into pre-faulted memory, same run; baseline = same steps without "
           "checkpoints, alternated"},
      {"logical_bytes", bytes},
      {"staging_budget", rt.value()->staging_budget()},
      {"peak_rss_bytes", peak},
      {"peak_rss_over_tree_bytes", peak > bytes * copies.size() ? peak - bytes * copies.size() : 0},
      {"base_rss_bytes", c.base_rss},
      {"peak_rss_over_tree_and_base_bytes",
       peak > bytes * copies.size() + c.base_rss ? peak - bytes * copies.size() - c.base_rss : 0},
      {"step_ms_target", c.step_ms},
      {"every", c.every},
      {"steps", c.steps},
      {"runs", c.runs},
      {"checkpoints", stalls.size()},
      {"cpu_threads", cpu_threads},
      {"elements_per_step", per_step},
      {"stall_ms_median", stall.median},
      {"stall_ms_min", stall.min},
      {"stall_ms_max", stall.max},
      {"stall_ms", stall_list},
      {"memcpy_ms", mc.median},
      {"memcpy_ms_spread", to_json(mc)},
      {"stall_over_memcpy", mc.median > 0 ? stall.median / mc.median : 0.0},
      // Contention-proof view: CPU time the process spent during the stall (the loop thread is
      // blocked, so it is the capture's), and the thread CPU time of the memcpy.
      {"stall_cpu_ms_median", summarize(stall_cpus).median},
      {"stall_minor_faults_median", summarize(stall_faults).median},
      {"stall_minor_faults", boost::json::value_from(stall_faults)},
      {"memcpy_cpu_ms", summarize(memcpy_cpus).median},
      {"stall_cpu_over_threads_ms", summarize(stall_cpus).median / cpu_threads},
      {"step_inflation", summarize(inflation).median},
      {"step_inflation_spread", to_json(summarize(inflation))},
      {"step_ms_in_flight", summarize(inflight_ms).median},
      {"step_ms_no_ckpt_in_run", summarize(quiet_ms).median},
      {"step_ms_baseline", summarize(base_ms).median},
      {"overhead_pct", summarize(overhead).median},
      {"overhead_pct_spread", to_json(summarize(overhead))},
      {"overhead_pct_without_final_commit_wait", summarize(overhead_steady).median},
      {"wall_s_with_ckpt", summarize(wall_with).median},
      {"wall_s_without", summarize(wall_without).median},
      {"commit_wait_ms_median", summarize(commit_waits).median},
      {"stages",
       {{"staged_s", summarize(st_staged).median},
        {"capture_cpu_s", summarize(st_capture).median},
        {"encode_cpu_s", summarize(st_encode).median},
        {"written_s", summarize(st_written).median},
        {"fsync_s", summarize(st_fsync).median},
        {"commit_s", summarize(st_commit).median},
        {"committed_s", summarize(st_committed).median}}},
      {"machine", machine_facts(c.dir)}};
  if (c.mode == leaf_mode::borrowed) {
    j["target"] = "stall_ms_median <= 1.2 x memcpy_ms";
    j["target_met"] = stall.median <= 1.2 * mc.median;
  } else {
    j["target"] = "stall_ms_median <= 2 ms";
    j["target_met"] = stall.median <= 2.0;
  }
  j["step_inflation_target_met"] = summarize(inflation).median <= 1.10;
  return j;
}

namespace {
double num(const boost::json::object& j, std::string_view k) {
  auto* v = j.if_contains(k);
  return v && v->is_number() ? v->to_number<double>() : 0.0;
}
spread spread_of(const boost::json::object& j, std::string_view k) {
  spread s;
  auto* v = j.if_contains(k);
  if (!v || !v->is_object()) return s;
  const auto& o = v->as_object();
  s = {num(o, "median"), num(o, "min"), num(o, "max"), static_cast<int>(num(o, "n"))};
  return s;
}
}  // namespace

void print_train(const boost::json::object& j) {
  const auto& st = j.at("stages").as_object();
  std::printf(
      "train %s, %s leaves: %.3f GiB, %d checkpoint(s) over %d run(s) of %d steps; "
      "median (min-max)\n",
      j.at("workload").as_string().c_str(), j.at("leaf_mode").as_string().c_str(),
      num(j, "logical_bytes") / gib, static_cast<int>(num(j, "checkpoints")),
      static_cast<int>(num(j, "runs")), static_cast<int>(num(j, "steps")));
  std::printf("  method: %s\n", j.at("method").as_string().c_str());
  std::printf(
      "  memory   staging budget %.0f MiB, peak RSS %.2f GiB (the state + %.0f MiB; the process "
      "held %.0f MiB before the state was built, so + %.0f MiB for the checkpoints)\n",
      num(j, "staging_budget") / (1 << 20), num(j, "peak_rss_bytes") / gib,
      num(j, "peak_rss_over_tree_bytes") / (1 << 20), num(j, "base_rss_bytes") / (1 << 20),
      num(j, "peak_rss_over_tree_and_base_bytes") / (1 << 20));
  std::printf(
      "  stall    %.1f ms median, %.1f ms max   memcpy %s ms   stall/memcpy %.2f   "
      "target (%s): %s\n",
      num(j, "stall_ms_median"), num(j, "stall_ms_max"),
      describe(spread_of(j, "memcpy_ms_spread"), "%.1f").c_str(), num(j, "stall_over_memcpy"),
      j.at("target").as_string().c_str(), j.at("target_met").as_bool() ? "met" : "NOT met");
  std::printf(
      "  CPU      capture %.1f CPU-ms per checkpoint (%.1f ms over %d thread(s) if they had "
      "the cores), memcpy %.1f CPU-ms\n",
      num(j, "stall_cpu_ms_median"), num(j, "stall_cpu_over_threads_ms"),
      static_cast<int>(num(j, "cpu_threads")), num(j, "memcpy_cpu_ms"));
  std::printf(
      "  steps    %.1f ms in flight, %.1f ms otherwise, %.1f ms baseline   inflation %s "
      "(target <= 1.10: %s)\n",
      num(j, "step_ms_in_flight"), num(j, "step_ms_no_ckpt_in_run"), num(j, "step_ms_baseline"),
      describe(spread_of(j, "step_inflation_spread"), "%.3f").c_str(),
      j.at("step_inflation_target_met").as_bool() ? "met" : "NOT met");
  std::printf(
      "  overhead %s %% of the wall (%.2f s vs %.2f s); %.1f %% without the final commit "
      "wait\n",
      describe(spread_of(j, "overhead_pct_spread"), "%.1f").c_str(), num(j, "wall_s_with_ckpt"),
      num(j, "wall_s_without"), num(j, "overhead_pct_without_final_commit_wait"));
  std::printf(
      "  stages   staged %.3f s, capture %.3f CPU-s, encode %.2f CPU-s, last write %.3f s, "
      "fsync %.3f s, commit %.3f s, committed %.3f s (medians per checkpoint)\n",
      num(st, "staged_s"), num(st, "capture_cpu_s"), num(st, "encode_cpu_s"), num(st, "written_s"),
      num(st, "fsync_s"), num(st, "commit_s"), num(st, "committed_s"));
}

}  // namespace ckpt::perf

namespace {

int usage() {
  std::fprintf(
      stderr,
      "usage: ckpt-perf train --workload W --step-ms MS --every K [--steps N] [--runs R]\n"
      "                       [--leaf-mode borrowed|shared|both] [--dir DIR] [--cpu-threads T]\n"
      "                       [--budget BYTES] [--json]\n");
  return 2;
}

int train_main(int argc, char** argv) {
  ckpt::perf::train_config c;
  c.steps = 0;
  std::string mode = "both";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--json") {
      json = true;
    } else if (a == "--workload" && (v = next())) {
      c.workload = v;
    } else if (a == "--dir" && (v = next())) {
      c.dir = v;
    } else if (a == "--step-ms" && (v = next())) {
      c.step_ms = std::atof(v);
    } else if (a == "--every" && (v = next())) {
      c.every = std::atoi(v);
    } else if (a == "--steps" && (v = next())) {
      c.steps = std::atoi(v);
    } else if (a == "--cpu-threads" && (v = next())) {
      c.cpu_threads = static_cast<unsigned>(std::atoi(v));
    } else if (a == "--runs" && (v = next())) {
      c.runs = std::max(1, std::atoi(v));
    } else if (a == "--leaf-mode" && (v = next())) {
      mode = v;
    } else if (a == "--budget" && (v = next())) {
      auto b = ckpt::perf::parse_bytes(v);
      if (!b) return usage();
      c.staging_budget = *b;
    } else {
      return usage();
    }
  }
  if (c.steps == 0) c.steps = 4 * c.every + c.every / 2;
  if (c.step_ms <= 0 || c.every <= 0 || c.steps < c.every ||
      (mode != "borrowed" && mode != "shared" && mode != "both")) {
    return usage();
  }
  c.base_rss = ckpt::perf::rss_bytes();
  auto t = ckpt::perf::make_workload(c.workload);
  if (!t) {
    std::fprintf(stderr, "ckpt-perf train: %s\n", t.error().what().c_str());
    return 2;
  }
  boost::json::array out;
  for (auto m : {ckpt::perf::leaf_mode::borrowed, ckpt::perf::leaf_mode::shared}) {
    if (mode != "both" && mode != (m == ckpt::perf::leaf_mode::borrowed ? "borrowed" : "shared")) {
      continue;
    }
    c.mode = m;
    auto j = ckpt::perf::bench_train(c, t.value());
    if (!j) {
      std::fprintf(stderr, "ckpt-perf train: %s\n", j.error().what().c_str());
      return 1;
    }
    if (json) {
      out.push_back(std::move(j).value());
    } else {
      ckpt::perf::print_train(j.value());
    }
  }
  if (json) {
    std::printf("%s\n", out.size() == 1 ? boost::json::serialize(out[0]).c_str()
                                        : boost::json::serialize(out).c_str());
  }
  return 0;
}

ckpt::perf::register_command train_cmd("train", "simulated training loop with async checkpoints",
                                       train_main);

}  // namespace
