// ckpt-perf save | load: the WORKLOADS.md trees through the save and load pipelines, with two
// baselines of the same byte count in the same folder, alternated with our runs: the raw engine
// (plain O_DIRECT io_uring, 4 MiB blocks, 32 in flight: raw_io.hpp) and fio when installed.
//
//   ckpt-perf save --workload dense|sparse|small|bf16 --dir DIR [--runs N] [--no-fio] [--warm]
//   ckpt-perf load --workload dense|sparse|small|bf16 --dir DIR [--runs N] [--no-fio] [--warm]
//
// Method (save): per run three timed steps, their order rotating from run to run (use a
// multiple of 3 runs: a big write straight after another one is faster on our disks than one
// after a pause): the raw baseline, fio, and our save: by default in a fresh process
// (`ckpt-perf-child save`, perf/child.cpp, which links libckpt alone) that builds the tree (owned
// leaves), resets the peak-RSS mark and times save_blocking() from the
// call to the commit (fsyncs, index, marker, rename and directory fsyncs included), paying
// first-touch costs as a user does; with --warm in this process after pre-faulting 2x the
// tree's bytes (untimed).
// Logical GiB/s = tree bytes / that time; the ratio is ours / raw write of the same run; medians
// over runs. Against fio both the ratio of the medians (what the reports quote) and the spread
// of the per-run ratios (ours / fio of the same run: how far the disk moved). fio: --rw=write
// --bs=4M --iodepth=32 --direct=1 --ioengine=io_uring --end_fsync=1 over the same byte count.
// Method (load): save once (untimed); per run: the raw baseline (the checkpoint's own data files
// read with O_DIRECT), fio, drop the page cache (root), restore into pre-touched destination
// buffers with checksums verified (a fresh process builds its own).
#include "bench_util.hpp"
#include "benches.hpp"
#include "fio.hpp"
#include "perf.hpp"
#include "raw_io.hpp"
#include "workloads.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace ckpt::perf {

namespace {
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double num(const boost::json::object& j, std::string_view k) {
  auto* v = j.if_contains(k);
  return v && v->is_number() ? v->to_number<double>() : 0.0;
}
spread spread_of(const boost::json::object& j, std::string_view k) {
  spread s;
  auto* v = j.if_contains(k);
  if (!v || !v->is_object()) return s;
  const auto& o = v->as_object();
  s.median = num(o, "median");
  s.min = num(o, "min");
  s.max = num(o, "max");
  s.n = static_cast<int>(num(o, "n"));
  return s;
}
// Runs `ckpt-perf-child <args>` (perf/child.cpp, beside this executable) in a fresh process;
// the JSON object it prints on its last line. The child links libckpt alone, so its peak RSS is
// the tree and what ckpt adds, not ckpt-perf's libtorch and MPI (~150 MiB of library pages).
result<boost::json::object> run_child(const std::vector<std::string>& args) {
  std::string cmd = shell_quote((fs::path(self_exe()).parent_path() / "ckpt-perf-child").string());
  for (const auto& a : args)
    cmd += " " + shell_quote(a);
  int status = 0;
  const std::string out = run_capture(cmd, &status);
  if (status == -1) return fail(errc::aborted, "cannot start " + cmd);
  const auto last = out.find_last_of('{');
  if (status != 0 || last == std::string::npos) {
    return fail(errc::aborted, cmd + " failed (status " + std::to_string(status) + "): " + out);
  }
  boost::system::error_code jec;
  auto v = boost::json::parse(std::string_view(out).substr(last), jec);
  if (jec || !v.is_object()) return fail(errc::aborted, cmd + ": unreadable output: " + out);
  return v.as_object();
}

// The data files of checkpoint `dir`, for the load baseline.
std::vector<std::string> data_files_of(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with("data-")) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

result<boost::json::object> bench_save(const save_load_config& c, const tree& t) {
  const std::uint64_t logical = t.num_bytes();
  fs::create_directories(c.dir);
  std::vector<double> ours, fio, raw, ratio, fio_ratio, staged, encode, written, fsync, commit;
  std::uint64_t stored = 0, peak = 0, direct = 0, added = 0;
  std::string fio_note;
  for (int r = 0; r < c.runs; ++r) {
    // Three timed steps per run: the raw baseline, fio, our save. Their order rotates from run
    // to run (use a multiple of 3 runs), because on the disks we measure a big write that
    // directly follows another one is ~30 % faster than one after a pause: a fixed order made
    // whichever step came second look fast.
    double raw_w = 0, fio_w = 0;
    auto run_raw = [&]() -> result<void> {
      if (!c.raw) return success();
      auto b = raw_write_read_gibps(c.dir, logical, {.read = false});
      if (!b) return fail(std::move(b).error());
      raw_w = b.value().write_gibps;
      raw.push_back(raw_w);
      return success();
    };
    auto run_fio = [&]() -> result<void> {
      if (!c.fio) return success();
      if (auto f = fio_gibps(c.dir, logical, true, &fio_note)) {
        fio.push_back(*f);
        fio_w = *f;
      }
      return success();
    };
    auto run_save = [&]() -> result<void> {
      fs::path target = fs::path(c.dir) / ("ckpt-perf-save-" + c.workload);
      fs::remove_all(target);
      if (c.fresh) {
        auto j = run_child({"save", "--workload", c.workload, "--target", target.string()});
        if (!j) return fail(std::move(j).error());
        const auto& o = j.value();
        peak = std::max(peak, static_cast<std::uint64_t>(num(o, "peak_rss_bytes")));
        added = std::max(added, static_cast<std::uint64_t>(num(o, "added_rss_bytes")));
        stored = static_cast<std::uint64_t>(num(o, "stored_bytes"));
        direct = static_cast<std::uint64_t>(num(o, "direct_bytes"));
        ours.push_back(double(logical) / num(o, "secs") / gib);
        staged.push_back(num(o, "staged_s"));
        encode.push_back(num(o, "encode_s"));
        written.push_back(num(o, "written_s"));
        fsync.push_back(num(o, "fsync_s"));
        commit.push_back(num(o, "commit_s"));
        fs::remove_all(target);
        return success();
      }
      reset_peak_rss();
      const std::uint64_t before = peak_rss_bytes();
      auto t0 = clock_type::now();
      auto s = save_blocking(target, t, {{"workload", c.workload}});
      double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
      peak = std::max(peak, peak_rss_bytes());
      added = std::max(added, peak_rss_bytes() - before);
      if (!s) return fail(std::move(s).error());
      const save_stats& st = s.value();
      stored = st.stored_bytes;
      direct = st.direct_bytes;
      ours.push_back(double(logical) / secs / gib);
      staged.push_back(st.staged_s);
      encode.push_back(st.encode_s);
      written.push_back(st.written_s);
      fsync.push_back(st.fsync_s);
      commit.push_back(st.commit_s);
      fs::remove_all(target);
      return success();
    };
    // (Warm: untimed, memory the save will use first touched here. Fresh: the child pays.)
    if (!c.fresh) prefault(2 * logical);
    for (int k = 0; k < 3; ++k) {
      const int step = (r + k) % 3;
      auto done = step == 0 ? run_raw() : step == 1 ? run_fio() : run_save();
      if (!done) return fail(std::move(done).error());
    }
    if (raw_w > 0) ratio.push_back(ours.back() / raw_w);
    if (fio_w > 0) fio_ratio.push_back(ours.back() / fio_w);
  }
  const spread save = summarize(ours);
  boost::json::object j{
      {"bench", "save"},
      {"workload", c.workload},
      {"method",
       std::string(c.fresh ? "durable save_blocking (commit included) of owned leaves, each in a "
                             "fresh process that builds the tree first (peak RSS: the child's, "
                             "tree included, from the call on)"
                           : "durable save (commit included) of owned leaves after a 2x "
                             "pre-fault, in this process") +
           "; chunks 4 MiB, O_DIRECT, io_uring; raw baseline (same bytes, O_DIRECT io_uring 4 MiB "
           "x32, fsync) and fio alternated with each run (the order of the three rotates from run "
           "to run)"},
      {"fresh_process", c.fresh},
      {"direct_bytes", direct},
      {"logical_bytes", logical},
      {"stored_bytes", stored},
      {"compression_ratio", stored ? double(logical) / double(stored) : 0.0},
      {"save_s", double(logical) / gib / save.median},
      {"save_gibps", save.median},
      {"save_gibps_spread", to_json(save)},
      {"staged_s", summarize(staged).median},
      {"peak_rss_bytes", peak},
      {"peak_rss_over_tree_bytes", peak > logical ? peak - logical : 0},
      {"added_rss_bytes", added},
      {"runs", c.runs},
      {"stages",
       {{"staged_s", summarize(staged).median},
        {"encode_cpu_s", summarize(encode).median},
        {"written_s", summarize(written).median},
        {"fsync_s", summarize(fsync).median},
        {"commit_s", summarize(commit).median}}},
      {"machine", machine_facts(c.dir)}};
  if (!raw.empty()) {
    j["raw_write_gibps"] = summarize(raw).median;
    j["raw_write_gibps_spread"] = to_json(summarize(raw));
    j["ratio_vs_raw"] = summarize(ratio).median;
    j["ratio_vs_raw_spread"] = to_json(summarize(ratio));
  }
  if (!fio.empty()) {
    j["fio_write_gibps"] = summarize(fio).median;
    j["fio_write_gibps_spread"] = to_json(summarize(fio));
    j["ratio_vs_fio"] = save.median / summarize(fio).median;
    j["ratio_vs_fio_per_run_spread"] = to_json(summarize(fio_ratio));
  } else if (c.fio) {
    j["fio_note"] = fio_note;
  }
  return j;
}

void print_save(const boost::json::object& j) {
  const auto& st = j.at("stages").as_object();
  std::printf(
      "save %s: %.3f GiB logical, %.3f GiB stored (ratio %.2f), %d run(s): median "
      "(min-max)\n",
      j.at("workload").as_string().c_str(), num(j, "logical_bytes") / gib,
      num(j, "stored_bytes") / gib, num(j, "compression_ratio"), static_cast<int>(num(j, "runs")));
  std::printf("  method: %s\n", j.at("method").as_string().c_str());
  std::printf(
      "  save     %.3f s   %s GiB/s   staged after %.3f s   peak RSS %.2f GiB (tree + %.0f MiB, "
      "%.0f MiB added by the save)   %.0f %% written from the leaves' memory\n",
      num(j, "save_s"), describe(spread_of(j, "save_gibps_spread")).c_str(), num(j, "staged_s"),
      num(j, "peak_rss_bytes") / gib, num(j, "peak_rss_over_tree_bytes") / (1 << 20),
      num(j, "added_rss_bytes") / (1 << 20),
      100.0 * num(j, "direct_bytes") / std::max(1.0, num(j, "logical_bytes")));
  if (j.contains("raw_write_gibps")) {
    std::printf("  raw      %s GiB/s (O_DIRECT io_uring write+fsync, 4 MiB x32)   ratio %s\n",
                describe(spread_of(j, "raw_write_gibps_spread")).c_str(),
                describe(spread_of(j, "ratio_vs_raw_spread")).c_str());
  }
  std::printf(
      "  stages   staged %.3f s, encode %.2f CPU-s, last write at %.3f s, fsync %.3f s, "
      "commit %.3f s\n",
      num(st, "staged_s"), num(st, "encode_cpu_s"), num(st, "written_s"), num(st, "fsync_s"),
      num(st, "commit_s"));
  if (j.contains("fio_write_gibps")) {
    std::printf(
        "  fio      %s GiB/s (write, bs 4M, iodepth 32, direct, end_fsync)   ratio %.2f of the "
        "medians; per run %s\n",
        describe(spread_of(j, "fio_write_gibps_spread")).c_str(), num(j, "ratio_vs_fio"),
        describe(spread_of(j, "ratio_vs_fio_per_run_spread")).c_str());
  } else if (j.contains("fio_note")) {
    std::printf("  fio      unavailable: %s\n", j.at("fio_note").as_string().c_str());
  }
}

result<boost::json::object> bench_load(const save_load_config& c, const tree& t) {
  const std::uint64_t logical = t.num_bytes();
  fs::create_directories(c.dir);
  fs::path target = fs::path(c.dir) / ("ckpt-perf-load-" + c.workload);
  fs::remove_all(target);
  if (auto s = save_blocking(target, t, {}); !s) {
    return fail(std::move(s).error().with_context("saving the checkpoint to load"));
  }
  tree dest = destination_like(t);
  const std::vector<std::string> files = data_files_of(target);
  std::vector<double> ours, fio, raw, ratio, fio_ratio;
  std::string cache, fio_note;
  std::uint64_t peak = 0, added = 0;
  for (int r = 0; r < c.runs; ++r) {
    // The raw baseline, fio and our load, in an order rotating from run to run: a read of the
    // same files straight after another one is faster on our virtual disks (the host caches
    // them), so a fixed order flatters whichever comes second.
    double raw_r = 0, fio_r = 0;
    auto run_raw = [&]() -> result<void> {
      if (!c.raw) return success();
      // The checkpoint's own data files: the same bytes at the same age on disk.
      auto b = raw_read_files_gibps(files);
      if (!b) return fail(std::move(b).error());
      raw_r = b.value();
      raw.push_back(raw_r);
      return success();
    };
    auto run_fio = [&]() -> result<void> {
      if (!c.fio) return success();
      if (auto f = fio_gibps(c.dir, logical, false, &fio_note)) {
        fio.push_back(*f);
        fio_r = *f;
      }
      return success();
    };
    auto run_load = [&]() -> result<void> {
      cache = drop_page_cache();
      double secs = 0;
      if (c.fresh) {
        auto j = run_child({"load", "--workload", c.workload, "--target", target.string()});
        if (!j) return fail(std::move(j).error());
        secs = num(j.value(), "secs");
        peak = std::max(peak, static_cast<std::uint64_t>(num(j.value(), "peak_rss_bytes")));
        added = std::max(added, static_cast<std::uint64_t>(num(j.value(), "added_rss_bytes")));
      } else {
        reset_peak_rss();
        const std::uint64_t before = peak_rss_bytes();
        auto t0 = clock_type::now();
        auto l = load_blocking(target, &dest);
        secs = std::chrono::duration<double>(clock_type::now() - t0).count();
        peak = std::max(peak, peak_rss_bytes());
        added = std::max(added, peak_rss_bytes() - before);
        if (!l) return fail(std::move(l).error());
      }
      ours.push_back(double(logical) / secs / gib);
      return success();
    };
    for (int k = 0; k < 3; ++k) {
      const int step = (r + k) % 3;
      auto done = step == 0 ? run_raw() : step == 1 ? run_fio() : run_load();
      if (!done) return fail(std::move(done).error());
    }
    if (raw_r > 0) ratio.push_back(ours.back() / raw_r);
    if (fio_r > 0) fio_ratio.push_back(ours.back() / fio_r);
  }
  // Bit-exact, once, untimed (a fresh process would need a second copy of the tree to compare).
  bool verified = false;
  if (auto l = load_blocking(target, &dest)) verified = l.value().tree == t;
  fs::remove_all(target);
  const spread load = summarize(ours);
  boost::json::object j{
      {"bench", "load"},
      {"workload", c.workload},
      {"method",
       std::string(c.fresh ? "cold restore, each in a fresh process that builds a pre-touched "
                             "destination of the tree's shapes first (peak RSS: the child's, "
                             "destination included, from the call on)"
                           : "cold restore into pre-touched destination buffers, in this process") +
           ", checksums verified, O_DIRECT reads through io_uring; raw baseline: the checkpoint's "
           "own data files read with O_DIRECT io_uring 4 MiB x32, page cache dropped, alternated "
           "with each run"},
      {"fresh_process", c.fresh},
      {"peak_rss_bytes", peak},
      {"peak_rss_over_tree_bytes", peak > logical ? peak - logical : 0},
      {"added_rss_bytes", added},
      {"logical_bytes", logical},
      {"load_s", double(logical) / gib / load.median},
      {"load_gibps", load.median},
      {"load_gibps_spread", to_json(load)},
      {"verified", verified},
      {"cache", cache},
      {"runs", c.runs},
      {"machine", machine_facts(c.dir)}};
  if (!raw.empty()) {
    j["raw_read_gibps"] = summarize(raw).median;
    j["raw_read_gibps_spread"] = to_json(summarize(raw));
    j["ratio_vs_raw"] = summarize(ratio).median;
    j["ratio_vs_raw_spread"] = to_json(summarize(ratio));
  }
  if (!fio.empty()) {
    j["fio_read_gibps"] = summarize(fio).median;
    j["fio_read_gibps_spread"] = to_json(summarize(fio));
    j["ratio_vs_fio"] = load.median / summarize(fio).median;
    j["ratio_vs_fio_per_run_spread"] = to_json(summarize(fio_ratio));
  } else if (c.fio) {
    j["fio_note"] = fio_note;
  }
  return j;
}

void print_load(const boost::json::object& j) {
  std::printf("load %s: %.3f GiB logical, %d run(s): median (min-max); page cache: %s\n",
              j.at("workload").as_string().c_str(), num(j, "logical_bytes") / gib,
              static_cast<int>(num(j, "runs")), j.at("cache").as_string().c_str());
  std::printf("  method: %s\n", j.at("method").as_string().c_str());
  std::printf(
      "  load     %.3f s   %s GiB/s   %s   peak RSS %.2f GiB (tree + %.0f MiB, %.0f MiB added by "
      "the load)\n",
      num(j, "load_s"), describe(spread_of(j, "load_gibps_spread")).c_str(),
      j.at("verified").as_bool() ? "verified bit-exact" : "MISMATCH",
      num(j, "peak_rss_bytes") / gib, num(j, "peak_rss_over_tree_bytes") / (1 << 20),
      num(j, "added_rss_bytes") / (1 << 20));
  if (j.contains("raw_read_gibps")) {
    std::printf(
        "  raw      %s GiB/s (its data files, O_DIRECT io_uring cold read, 4 MiB x32)   ratio %s\n",
        describe(spread_of(j, "raw_read_gibps_spread")).c_str(),
        describe(spread_of(j, "ratio_vs_raw_spread")).c_str());
  }
  if (j.contains("fio_read_gibps")) {
    std::printf(
        "  fio      %s GiB/s (read, bs 4M, iodepth 32, direct)   ratio %.2f of the medians; per "
        "run %s\n",
        describe(spread_of(j, "fio_read_gibps_spread")).c_str(), num(j, "ratio_vs_fio"),
        describe(spread_of(j, "ratio_vs_fio_per_run_spread")).c_str());
  } else if (j.contains("fio_note")) {
    std::printf("  fio      unavailable: %s\n", j.at("fio_note").as_string().c_str());
  }
}

}  // namespace ckpt::perf

namespace {

struct options {
  ckpt::perf::save_load_config c;
  bool json = false;
};

int parse(int argc, char** argv, options& o, const char* name) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--workload") {
      const char* v = next();
      if (!v) return 2;
      o.c.workload = v;
    } else if (a == "--dir") {
      const char* v = next();
      if (!v) return 2;
      o.c.dir = v;
    } else if (a == "--runs") {
      const char* v = next();
      if (!v) return 2;
      o.c.runs = std::max(1, std::atoi(v));
    } else if (a == "--no-fio") {
      o.c.fio = false;
    } else if (a == "--no-raw") {
      o.c.raw = false;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--warm") {
      o.c.fresh = false;
    } else if (a == "--fresh-process") {
      o.c.fresh = true;
    } else {
      std::fprintf(stderr, "ckpt-perf %s: unknown argument %s\n", name, a.c_str());
      return 2;
    }
  }
  if (o.c.workload.empty() || o.c.dir.empty()) {
    std::fprintf(stderr,
                 "usage: ckpt-perf %s --workload dense|sparse|small|bf16 --dir DIR [--runs N] "
                 "[--no-fio] [--no-raw] [--fresh-process (default) | --warm] [--json]\n",
                 name);
    return 2;
  }
  return 0;
}

int bench_main(int argc, char** argv, bool save) {
  const char* name = save ? "save" : "load";
  options o;
  if (int rc = parse(argc, argv, o, name)) return rc;
  auto t = ckpt::perf::make_workload(o.c.workload);
  if (!t) {
    std::fprintf(stderr, "ckpt-perf %s: %s\n", name, t.error().what().c_str());
    return 2;
  }
  auto j = save ? ckpt::perf::bench_save(o.c, t.value()) : ckpt::perf::bench_load(o.c, t.value());
  if (!j) {
    std::fprintf(stderr, "ckpt-perf %s: %s\n", name, j.error().what().c_str());
    return 1;
  }
  if (o.json) {
    std::printf("%s\n", boost::json::serialize(j.value()).c_str());
  } else if (save) {
    ckpt::perf::print_save(j.value());
  } else {
    ckpt::perf::print_load(j.value());
  }
  if (!save && !j.value().at("verified").as_bool()) return 1;
  return 0;
}

int save_main(int argc, char** argv) {
  return bench_main(argc, argv, true);
}
int load_main(int argc, char** argv) {
  return bench_main(argc, argv, false);
}

ckpt::perf::register_command save_cmd("save", "save a WORKLOADS.md tree (durable)", save_main);
ckpt::perf::register_command load_cmd("load", "load a WORKLOADS.md tree (cold cache)", load_main);

}  // namespace
