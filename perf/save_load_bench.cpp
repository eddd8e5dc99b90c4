// ckpt-perf save | load: the WORKLOADS.md trees through the save and load pipelines, with two
// baselines of the same byte count in the same folder, alternated with our runs: the raw engine
// (plain O_DIRECT io_uring, 4 MiB blocks, 16 in flight: raw_io.hpp) and fio when installed.
//
//   ckpt-perf save --workload dense|sparse|small|bf16 --dir DIR [--runs N] [--no-fio] [--json]
//   ckpt-perf load --workload dense|sparse|small|bf16 --dir DIR [--runs N] [--no-fio] [--json]
//
// Method (save): generate the tree (untimed, owned leaves); per run three timed steps, their
// order rotating from run to run (use a multiple of 3 runs: a big write straight after another
// one is faster on our disks than one after a pause), after pre-faulting 2x the tree's bytes
// (untimed): the raw baseline, fio, and our save (reset the peak-RSS mark, time save_blocking()
// from the call to the commit: fsyncs, index, marker, rename and directory fsyncs included).
// Logical GiB/s = tree bytes / that time; the ratio is ours / raw write of the same run; medians
// over runs. fio: --rw=write --bs=4M --iodepth=16 --direct=1 --ioengine=io_uring --end_fsync=1 over
// the same byte count. Method (load): save once (untimed); per run: baselines, drop the page cache
// (root), restore into pre-touched destination buffers with checksums verified.
#include "bench_util.hpp"
#include "benches.hpp"
#include "fio.hpp"
#include "perf.hpp"
#include "raw_io.hpp"
#include "workloads.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

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
}  // namespace

result<boost::json::object> bench_save(const save_load_config& c, const tree& t) {
  const std::uint64_t logical = t.num_bytes();
  fs::create_directories(c.dir);
  std::vector<double> ours, fio, raw, ratio, staged, encode, written, fsync, commit;
  std::uint64_t stored = 0, peak = 0;
  std::string fio_note;
  for (int r = 0; r < c.runs; ++r) {
    // Three timed steps per run: the raw baseline, fio, our save. Their order rotates from run
    // to run (use a multiple of 3 runs), because on the disks we measure a big write that
    // directly follows another one is ~30 % faster than one after a pause: a fixed order made
    // whichever step came second look fast.
    double raw_w = 0;
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
      if (auto f = fio_gibps(c.dir, logical, true, &fio_note)) fio.push_back(*f);
      return success();
    };
    auto run_save = [&]() -> result<void> {
      fs::path target = fs::path(c.dir) / ("ckpt-perf-save-" + c.workload);
      fs::remove_all(target);
      reset_peak_rss();
      auto t0 = clock_type::now();
      auto s = save_blocking(target, t, {{"workload", c.workload}});
      double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
      peak = std::max(peak, peak_rss_bytes());
      if (!s) return fail(std::move(s).error());
      const save_stats& st = s.value();
      stored = st.stored_bytes;
      ours.push_back(double(logical) / secs / gib);
      staged.push_back(st.staged_s);
      encode.push_back(st.encode_s);
      written.push_back(st.written_s);
      fsync.push_back(st.fsync_s);
      commit.push_back(st.commit_s);
      fs::remove_all(target);
      return success();
    };
    prefault(2 * logical);  // (untimed; memory the save will use, first touched here)
    for (int k = 0; k < 3; ++k) {
      const int step = (r + k) % 3;
      auto done = step == 0 ? run_raw() : step == 1 ? run_fio() : run_save();
      if (!done) return fail(std::move(done).error());
    }
    if (raw_w > 0) ratio.push_back(ours.back() / raw_w);
  }
  const spread save = summarize(ours);
  boost::json::object j{
      {"bench", "save"},
      {"workload", c.workload},
      {"method",
       "durable save (commit included) of owned leaves after a 2x pre-fault; chunks 4 MiB, "
       "O_DIRECT, io_uring; raw baseline (same bytes, O_DIRECT io_uring 4 MiB x16, fsync) "
       "and fio alternated with each run (the order of the three rotates from run to run)"},
      {"logical_bytes", logical},
      {"stored_bytes", stored},
      {"compression_ratio", stored ? double(logical) / double(stored) : 0.0},
      {"save_s", double(logical) / gib / save.median},
      {"save_gibps", save.median},
      {"save_gibps_spread", to_json(save)},
      {"staged_s", summarize(staged).median},
      {"peak_rss_bytes", peak},
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
  std::printf("  save     %.3f s   %s GiB/s   staged after %.3f s   peak RSS %.2f GiB\n",
              num(j, "save_s"), describe(spread_of(j, "save_gibps_spread")).c_str(),
              num(j, "staged_s"), num(j, "peak_rss_bytes") / gib);
  if (j.contains("raw_write_gibps")) {
    std::printf("  raw      %s GiB/s (O_DIRECT io_uring write+fsync, 4 MiB x16)   ratio %s\n",
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
        "  fio      %.2f GiB/s (write, bs 4M, iodepth 16, direct, end_fsync)   ratio %.2f\n",
        num(j, "fio_write_gibps"), num(j, "ratio_vs_fio"));
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
  std::vector<double> ours, fio, raw, ratio;
  std::string cache, fio_note;
  bool verified = true;
  for (int r = 0; r < c.runs; ++r) {
    double raw_r = 0;
    if (c.raw) {
      auto b = raw_write_read_gibps(c.dir, logical);
      if (!b) return fail(std::move(b).error());
      raw_r = b.value().read_gibps;
      raw.push_back(raw_r);
    }
    if (c.fio) {
      if (auto f = fio_gibps(c.dir, logical, false, &fio_note)) fio.push_back(*f);
    }
    cache = drop_page_cache();
    auto t0 = clock_type::now();
    auto l = load_blocking(target, &dest);
    double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (!l) return fail(std::move(l).error());
    ours.push_back(double(logical) / secs / gib);
    if (raw_r > 0) ratio.push_back(ours.back() / raw_r);
    if (r == 0) verified = l.value().tree == t;
  }
  fs::remove_all(target);
  const spread load = summarize(ours);
  boost::json::object j{
      {"bench", "load"},
      {"workload", c.workload},
      {"method",
       "cold restore into pre-touched destination buffers, checksums verified, O_DIRECT reads "
       "through io_uring; raw baseline (same bytes, O_DIRECT io_uring 4 MiB x16, cache dropped) "
       "alternated with each run"},
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
    j["ratio_vs_fio"] = load.median / summarize(fio).median;
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
  std::printf("  load     %.3f s   %s GiB/s   %s\n", num(j, "load_s"),
              describe(spread_of(j, "load_gibps_spread")).c_str(),
              j.at("verified").as_bool() ? "verified bit-exact" : "MISMATCH");
  if (j.contains("raw_read_gibps")) {
    std::printf("  raw      %s GiB/s (O_DIRECT io_uring cold read, 4 MiB x16)   ratio %s\n",
                describe(spread_of(j, "raw_read_gibps_spread")).c_str(),
                describe(spread_of(j, "ratio_vs_raw_spread")).c_str());
  }
  if (j.contains("fio_read_gibps")) {
    std::printf("  fio      %.2f GiB/s (read, bs 4M, iodepth 16, direct)   ratio %.2f\n",
                num(j, "fio_read_gibps"), num(j, "ratio_vs_fio"));
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
    } else {
      std::fprintf(stderr, "ckpt-perf %s: unknown argument %s\n", name, a.c_str());
      return 2;
    }
  }
  if (o.c.workload.empty() || o.c.dir.empty()) {
    std::fprintf(stderr,
                 "usage: ckpt-perf %s --workload dense|sparse|small|bf16 --dir DIR [--runs N] "
                 "[--no-fio] [--no-raw] [--json]\n",
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
