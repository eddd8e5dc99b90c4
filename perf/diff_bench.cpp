// ckpt-perf diff: differential checkpoints (WORKLOADS.md "finetune" and "train") against a full
// save of the same tree and the raw baselines, all in one run.
//
//   ckpt-perf diff [--workload finetune|train|all] [--dir DIR] [--runs N] [--json]
//
// Method: build dense (owned leaves), pre-fault 2x its bytes, fio write of the same byte count,
// a memcpy of every leaf into a pre-touched buffer (the stall a full capture costs), then save
// the tree once (the base, untimed) and change it as the workload says (untimed). Per run, in
// rotating order: a plain save (no base, hashes recorded, as every save), a save without hashes
// (hash_chunks = false: what hashing costs) and a differential save against the base (waiting
// saves: save_blocking, from the call to the commit); then a differential start_save, whose
// `staged` is the stall a training loop pays. Each writes a fresh directory, removed afterwards.
// Logical GiB/s = tree bytes / time; written = bytes of data files this save wrote; peak RSS per
// step (VmHWM reset before it). Medians over runs.
#include "bench_util.hpp"
#include "fio.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include <ckpt/runtime.hpp>
#include <ckpt/save.hpp>

#include <boost/json/serialize.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ckpt::perf {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Adds 1e-3 to one element in every 1024 of a float leaf (every 4 KiB page changes), or flips
// the low bit of every 4096th byte of another dtype.
void perturb(array& a) {
  auto bytes = a.mutable_bytes();
  if (a.dtype() == dtype::f32) {
    auto f = a.as_mutable<float>();
    for (std::size_t i = 0; i < f.size(); i += 1024)
      f[i] += 1e-3f;
    return;
  }
  for (std::size_t i = 0; i < bytes.size(); i += 4096)
    bytes[i] ^= std::byte{1};
}

// finetune: layers 22 and 23 of params, mu and nu, the final norm and the step change; the
// embedding and layers 0-21 are frozen. train: every leaf changes.
bool trainable(const std::string& path) {
  return path.find("layer_22") != std::string::npos || path.find("layer_23") != std::string::npos ||
         path.find("final_ln") != std::string::npos || path == "step" || path == "rng";
}

std::uint64_t change(const tree& t, bool finetune) {
  std::uint64_t changed = 0;
  for (auto& fl : t.flatten()) {
    if (finetune && !trainable(fl.path)) continue;
    array a = fl.array;  // (a copy shares the bytes)
    perturb(a);
    changed += a.num_bytes();
  }
  return changed;
}

struct step_result {
  double s = 0;
  double staged_s = 0;
  std::uint64_t written = 0, shared = 0, peak_rss = 0;
  save_stats stats;
};

result<step_result> timed_save(const fs::path& path, const tree& t, save_options o, bool async) {
  reset_peak_rss();
  step_result r;
  const auto t0 = clock_type::now();
  save_stats st;
  if (async) {
    auto h = start_save(path, t, {}, o);
    CKPT_TRY(h.wait_staged());
    r.staged_s = seconds_since(t0);
    CKPT_TRY(h.wait_committed());
    st = h.stats();
  } else {
    CKPT_TRY(st, save_blocking(path, t, {}, o));
  }
  r.s = seconds_since(t0);
  r.peak_rss = peak_rss_bytes();
  r.written = st.stored_bytes;
  r.shared = st.shared_bytes;
  r.stats = st;
  std::error_code ec;
  fs::remove_all(path, ec);
  return r;
}

result<boost::json::object> bench_diff(const std::string& workload, const std::string& dir,
                                       int runs) {
  const bool finetune = workload == "finetune";
  CKPT_TRY(tree t, make_workload("dense"));
  std::uint64_t logical = 0;
  for (const auto& fl : t.flatten())
    logical += fl.array.num_bytes();
  fs::create_directories(dir);
  prefault(2 * logical);
  boost::json::object j{{"workload", workload}, {"machine", machine_facts(dir)}};
  j["logical_bytes"] = logical;
  std::string why;
  auto fio = fio_gibps(dir, logical, true, &why);
  j["fio_write_gibps"] = fio ? boost::json::value(*fio) : boost::json::value(nullptr);
  if (!fio) j["fio_note"] = why;
  // A memcpy of the tree into pre-touched memory: what a full capture costs at best.
  double memcpy_s = 0;
  {
    aligned_buffer dst(logical);
    std::memset(dst.data(), 0, logical);
    const auto t0 = clock_type::now();
    std::uint64_t off = 0;
    for (const auto& fl : t.flatten()) {
      std::memcpy(dst.data() + off, fl.array.bytes().data(), fl.array.num_bytes());
      off += fl.array.num_bytes();
    }
    memcpy_s = seconds_since(t0);
  }
  j["memcpy_s"] = memcpy_s;
  const fs::path base = fs::path(dir) / "diff-base";
  {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  CKPT_TRY(save_blocking(base, t, {}, {}));
  j["changed_bytes"] = change(t, finetune);
  // The same tree with the leaves the workload never changes shared (immutable, as frozen
  // weights are): a start_save hashes those after `staged`, not before.
  tree frozen_shared = t;
  {
    auto keep = std::make_shared<const tree>(t);
    std::vector<array> leaves;
    for (const auto& fl : t.flatten()) {
      if (finetune && !trainable(fl.path)) {
        leaves.push_back(
            array::share(fl.array.dtype(), fl.array.shape(), keep, fl.array.bytes()).value());
      } else {
        leaves.push_back(fl.array);
      }
    }
    CKPT_TRY(frozen_shared, unflatten(t, std::move(leaves)));
  }
  reserve_staging(t, {});  // (as a training loop does once at start-up)
  save_options plain, nohash, diff;
  nohash.hash_chunks = false;
  diff.base = base;
  // The same differential start_save on a runtime that tracks writes (runtime_options::
  // track_writes), after one untracked-timing save on it that looked at the memory; before each
  // of its runs the workload's leaves are written again, which the kernel records (and which
  // costs a minor fault per page: timed against the same writes to unprotected pages).
  save_options tracked = diff;
  {
    runtime_options ro;
    ro.track_writes = true;
    CKPT_TRY(tracked.runtime, runtime::create(ro));
  }
  const bool tracking = tracked.runtime->tracks_writes();
  std::vector<double> tracked_stall_s, write_tracked_s, write_plain_s;
  std::uint64_t untouched = 0;
  if (tracking) {
    reserve_staging(t, tracked);
    CKPT_TRY(timed_save(fs::path(dir) / "diff-async", t, tracked, true));
  }
  std::vector<double> plain_s, nohash_s, diff_s, stall_s, async_s, plain_stall_s, shared_stall_s;
  std::uint64_t written = 0, shared = 0, peak_plain = 0, peak_diff = 0, peak_async = 0;
  for (int r = 0; r < runs; ++r) {
    for (int k = 0; k < 3; ++k) {
      const int which = (k + r) % 3;
      const fs::path p = fs::path(dir) / ("diff-run-" + std::to_string(which));
      if (which == 0) {
        CKPT_TRY(auto s, timed_save(p, t, plain, false));
        plain_s.push_back(s.s);
        peak_plain = std::max(peak_plain, s.peak_rss);
      } else if (which == 1) {
        CKPT_TRY(auto s, timed_save(p, t, nohash, false));
        nohash_s.push_back(s.s);
      } else {
        CKPT_TRY(auto s, timed_save(p, t, diff, false));
        diff_s.push_back(s.s);
        written = s.written;
        shared = s.shared;
        j["diff_breakdown"] = {{"encode_cpu_s", s.stats.encode_s},
                               {"written_s", s.stats.written_s},
                               {"fsync_s", s.stats.fsync_s},
                               {"commit_s", s.stats.commit_s},
                               {"committed_s", s.stats.committed_s}};
        peak_diff = std::max(peak_diff, s.peak_rss);
      }
    }
    CKPT_TRY(auto a, timed_save(fs::path(dir) / "diff-async", t, diff, true));
    stall_s.push_back(a.staged_s);
    async_s.push_back(a.s);
    peak_async = std::max(peak_async, a.peak_rss);
    CKPT_TRY(auto pa, timed_save(fs::path(dir) / "diff-async", t, plain, true));
    plain_stall_s.push_back(pa.staged_s);
    if (finetune) {
      CKPT_TRY(auto sa, timed_save(fs::path(dir) / "diff-async", frozen_shared, diff, true));
      shared_stall_s.push_back(sa.staged_s);
    }
    if (tracking) {
      auto t0 = clock_type::now();
      change(t, finetune);  // (the pages were protected by the last tracked save's look)
      write_tracked_s.push_back(seconds_since(t0));
      t0 = clock_type::now();
      change(t, finetune);  // (the same writes again: no faults)
      write_plain_s.push_back(seconds_since(t0));
      CKPT_TRY(auto ta, timed_save(fs::path(dir) / "diff-async", t, tracked, true));
      tracked_stall_s.push_back(ta.staged_s);
      untouched = ta.stats.untouched_bytes;
    }
  }
  {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  const auto gibps = [&](double s) { return static_cast<double>(logical) / gib / s; };
  const double plain_med = summarize(plain_s).median, diff_med = summarize(diff_s).median;
  j["plain_s"] = to_json(summarize(plain_s));
  j["nohash_s"] = to_json(summarize(nohash_s));
  j["diff_s"] = to_json(summarize(diff_s));
  j["diff_async_s"] = to_json(summarize(async_s));
  j["stall_s"] = to_json(summarize(stall_s));
  j["plain_gibps"] = gibps(plain_med);
  j["diff_gibps"] = gibps(diff_med);
  j["diff_vs_fio"] = fio ? boost::json::value(gibps(diff_med) / *fio) : nullptr;
  j["diff_vs_plain_time"] = diff_med / plain_med;
  j["plain_vs_nohash_time"] = plain_med / summarize(nohash_s).median;
  j["written_bytes"] = written;
  j["shared_bytes"] = shared;
  j["written_share"] = static_cast<double>(written) / static_cast<double>(logical);
  j["stall_vs_memcpy"] = summarize(stall_s).median / memcpy_s;
  j["plain_stall_s"] = to_json(summarize(plain_stall_s));
  j["plain_stall_vs_memcpy"] = summarize(plain_stall_s).median / memcpy_s;
  if (finetune) {
    j["shared_stall_s"] = to_json(summarize(shared_stall_s));
    j["shared_stall_vs_memcpy"] = summarize(shared_stall_s).median / memcpy_s;
  }
  j["tracks_writes"] = tracking;
  if (tracking) {
    j["tracked_stall_s"] = to_json(summarize(tracked_stall_s));
    j["tracked_stall_vs_memcpy"] = summarize(tracked_stall_s).median / memcpy_s;
    j["tracked_untouched_bytes"] = untouched;
    j["write_tracked_s"] = to_json(summarize(write_tracked_s));
    j["write_plain_s"] = to_json(summarize(write_plain_s));
  }
  j["peak_rss_plain"] = peak_plain;
  j["peak_rss_diff"] = peak_diff;
  j["peak_rss_async"] = peak_async;
  j["runs"] = runs;
  return j;
}

void print_diff(const boost::json::object& j) {
  auto d = [&](const char* k) {
    auto* v = j.if_contains(k);
    return v && v->is_number() ? v->to_number<double>() : 0.0;
  };
  auto med = [&](const char* k) { return j.at(k).as_object().at("median").to_number<double>(); };
  const double logical = d("logical_bytes");
  std::printf("diff %s: dense, %.3f GiB logical, %.1f%% of it changed since the base; %d runs\n",
              j.at("workload").as_string().c_str(), logical / gib,
              100.0 * d("changed_bytes") / logical, static_cast<int>(d("runs")));
  std::printf("  fio write %.2f GiB/s; memcpy of the tree %.0f ms\n", d("fio_write_gibps"),
              1e3 * d("memcpy_s"));
  std::printf("  plain save %.2f GiB/s (%.2f s; without hashes %.2f s, hashing costs %+.1f%%)\n",
              d("plain_gibps"), med("plain_s"), med("nohash_s"),
              100.0 * (d("plain_vs_nohash_time") - 1));
  std::printf(
      "  differential save %.2f GiB/s logical (%.2f s) = %.2fx fio, %.2fx a plain save's time; "
      "wrote %.1f MiB = %.1f%% of logical, shared %.1f MiB\n",
      d("diff_gibps"), med("diff_s"), d("diff_vs_fio"), d("diff_vs_plain_time"),
      d("written_bytes") / (1 << 20), 100.0 * d("written_share"), d("shared_bytes") / (1 << 20));
  if (auto* b = j.if_contains("diff_breakdown"); b && b->is_object()) {
    const auto& o = b->as_object();
    auto g = [&](const char* k) { return o.at(k).to_number<double>(); };
    std::printf(
        "  differential save (last run): hash+encode %.0f ms CPU, data written at %.0f ms, "
        "data fsync %.0f ms, commit %.0f ms, committed at %.0f ms\n",
        1e3 * g("encode_cpu_s"), 1e3 * g("written_s"), 1e3 * g("fsync_s"), 1e3 * g("commit_s"),
        1e3 * g("committed_s"));
  }
  std::printf(
      "  start_save stall: differential %.0f ms = %.2fx the memcpy (committed %.2f s); plain %.0f "
      "ms = %.2fx\n",
      1e3 * med("stall_s"), d("stall_vs_memcpy"), med("diff_async_s"), 1e3 * med("plain_stall_s"),
      d("plain_stall_vs_memcpy"));
  if (j.contains("shared_stall_s")) {
    std::printf(
        "  start_save stall, frozen leaves shared (immutable): %.0f ms = %.2fx the memcpy\n",
        1e3 * med("shared_stall_s"), d("shared_stall_vs_memcpy"));
  }
  if (j.at("tracks_writes").as_bool()) {
    std::printf(
        "  start_save stall, tracking writes: %.0f ms = %.2fx the memcpy (%.1f MiB known "
        "unchanged, not read); the workload's writes after a save %.1f ms, again %.1f ms\n",
        1e3 * med("tracked_stall_s"), d("tracked_stall_vs_memcpy"),
        d("tracked_untouched_bytes") / (1 << 20), 1e3 * med("write_tracked_s"),
        1e3 * med("write_plain_s"));
  } else {
    std::printf("  start_save stall, tracking writes: the kernel cannot track writes here\n");
  }
  std::printf(
      "  peak RSS: plain %.0f MiB, differential %.0f MiB, start_save %.0f MiB (tree %.0f "
      "MiB)\n",
      d("peak_rss_plain") / (1 << 20), d("peak_rss_diff") / (1 << 20),
      d("peak_rss_async") / (1 << 20), logical / (1 << 20));
}

int diff_main(int argc, char** argv) {
  std::string workload = "all", dir = "/work/perfdir-perf";
  int runs = 3;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--workload" && i + 1 < argc) {
      workload = argv[++i];
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr,
                   "usage: ckpt-perf diff [--workload finetune|train|all] [--dir DIR] [--runs N] "
                   "[--json]\n");
      return 2;
    }
  }
  if (workload != "finetune" && workload != "train" && workload != "all") {
    std::fprintf(stderr, "ckpt-perf diff: unknown workload \"%s\" (finetune, train, all)\n",
                 workload.c_str());
    return 2;
  }
  int rc = 0;
  for (const std::string w : {"finetune", "train"}) {
    if (workload != "all" && workload != w) continue;
    auto j = bench_diff(w, dir, runs);
    if (!j) {
      std::fprintf(stderr, "ckpt-perf diff %s: %s\n", w.c_str(), j.error().message().c_str());
      rc = 1;
      continue;
    }
    if (json) {
      std::printf("%s\n", boost::json::serialize(j.value()).c_str());
    } else {
      print_diff(j.value());
    }
    std::fflush(stdout);
  }
  return rc;
}

register_command reg("diff", "differential saves: finetune and train workloads", diff_main);

}  // namespace
}  // namespace ckpt::perf
