// ckpt-perf sweep: save throughput as one parameter varies, each point beside the raw device
// baseline (plain O_DIRECT io_uring, 4 MiB x32, same bytes, measured just before the point).
//
//   ckpt-perf sweep --dir DIR [--quick] [--runs N] [--json]
//
// Series (synthetic trees of N(0, 0.02) float32, borrowed views of one generated pool):
//  - size:    64 MiB, 256 MiB, 1 GiB, 4 GiB (4 GiB not with --quick), 584 leaves max
//  - leaves:  10 .. 100,000 at a fixed total (1 GiB; 256 MiB with --quick)
//  - chunk:   save_options::chunk_bytes 256 KiB .. 16 MiB at the fixed total
//  - threads: runtime_options::cpu_threads 1, 2 (a dedicated runtime per point)
//  - depth:   runtime_options::io.queue_depth 4 .. 64 (a dedicated runtime per point)
// Each runtime does one untimed warm-up save first (its staging pool starts empty). Each point,
// --runs times (default 3; 1 with --quick): the raw baseline, a 2x pre-fault, then one
// durable save timed from the call to the commit; the run with the median GiB/s is reported.
// The bend line per series names the point where throughput falls >10 % below the series' best
// and the stage whose seconds per GiB grew most between the two (per-stage save_stats).
#include "bench_util.hpp"
#include "perf.hpp"
#include "raw_io.hpp"
#include "workloads.hpp"

#include <ckpt/save.hpp>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using ckpt::perf::gib;

struct point {
  std::string series;
  std::string label;
  double x = 0;
  std::uint64_t bytes = 0;
  double save_gibps = 0, raw_gibps = 0;
  double min_gibps = 0, max_gibps = 0;  // over the runs
  ckpt::save_stats st{};
  unsigned threads = 0;
};

struct stage_cost {
  const char* name;
  double per_gib;
};

/// Seconds per GiB of each stage (encode as wall: CPU seconds / threads).
std::vector<stage_cost> stage_costs(const point& p) {
  const double g = double(p.bytes) / gib;
  const double encode_wall = p.st.encode_s / std::max(1u, p.threads);
  const double write = std::max(0.0, p.st.written_s);
  return {{"encode (CPU pool)", encode_wall / g},
          {"capture+write to the last data write", write / g},
          {"fsync", p.st.fsync_s / g},
          {"commit (index, marker, rename, dir fsyncs)", p.st.commit_s / g}};
}

std::string bend_line(const std::vector<point>& pts) {
  if (pts.size() < 2) return {};
  std::size_t best = 0;
  for (std::size_t i = 0; i < pts.size(); ++i)
    if (pts[i].save_gibps > pts[best].save_gibps) best = i;
  std::size_t bend = pts.size();
  for (std::size_t i = 0; i < pts.size(); ++i) {
    if (i != best && pts[i].save_gibps < 0.9 * pts[best].save_gibps) {
      // The first such point after the best one, else the worst before it.
      if (i > best) {
        bend = i;
        break;
      }
      if (bend == pts.size() || pts[i].save_gibps < pts[bend].save_gibps) bend = i;
    }
  }
  char buf[512];
  if (bend == pts.size()) {
    const double ratio = pts[best].raw_gibps > 0 ? pts[best].save_gibps / pts[best].raw_gibps : 0;
    auto c = stage_costs(pts[best]);
    std::size_t top = 0;
    for (std::size_t k = 0; k < c.size(); ++k)
      if (c[k].per_gib > c[top].per_gib) top = k;
    std::snprintf(buf, sizeof buf,
                  "%s: flat within 10%% (best %.2f GiB/s at %s, %.2f of raw)%s; largest stage: "
                  "%s, %.3f s/GiB",
                  pts[0].series.c_str(), pts[best].save_gibps, pts[best].label.c_str(), ratio,
                  ratio >= 0.85 ? ": the device bounds it" : ": not at the device's limit",
                  c[top].name, c[top].per_gib);
    return buf;
  }
  auto a = stage_costs(pts[best]), b = stage_costs(pts[bend]);
  std::size_t grew = 0;
  for (std::size_t k = 0; k < a.size(); ++k)
    if (b[k].per_gib - a[k].per_gib > b[grew].per_gib - a[grew].per_gib) grew = k;
  std::snprintf(buf, sizeof buf,
                "%s: best %.2f GiB/s at %s; bends at %s (%.2f GiB/s, %+.0f%%): %s grew from "
                "%.3f to %.3f s/GiB",
                pts[0].series.c_str(), pts[best].save_gibps, pts[best].label.c_str(),
                pts[bend].label.c_str(), pts[bend].save_gibps,
                (pts[bend].save_gibps / pts[best].save_gibps - 1) * 100, a[grew].name,
                a[grew].per_gib, b[grew].per_gib);
  return buf;
}

std::string size_label(std::uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%llu GiB", static_cast<unsigned long long>(b >> 30));
  } else if (b >= (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%llu MiB", static_cast<unsigned long long>(b >> 20));
  } else {
    std::snprintf(buf, sizeof buf, "%llu KiB", static_cast<unsigned long long>(b >> 10));
  }
  return buf;
}

int sweep_main(int argc, char** argv) {
  std::string dir;
  bool quick = false, json = false;
  int runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "usage: ckpt-perf sweep --dir DIR [--quick] [--runs N] [--json]\n");
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "usage: ckpt-perf sweep --dir DIR [--quick] [--json]\n");
    return 2;
  }
  if (runs == 0) runs = quick ? 1 : 3;
  fs::create_directories(dir);
  const std::uint64_t fixed = quick ? 256ull << 20 : 1ull << 30;
  std::vector<std::uint64_t> sizes = {64ull << 20, 256ull << 20, 1ull << 30};
  if (!quick) sizes.push_back(4ull << 30);
  const std::uint64_t pool_bytes = std::max(fixed, sizes.back());
  if (!json)
    std::fprintf(stderr, "sweep: generating %s of N(0, 0.02) f32...\n",
                 size_label(pool_bytes).c_str());
  ckpt::aligned_buffer pool = ckpt::perf::gaussian_f32(pool_bytes);
  auto default_rt = ckpt::runtime::create();
  if (!default_rt) {
    std::fprintf(stderr, "ckpt-perf sweep: %s\n", default_rt.error().what().c_str());
    return 1;
  }
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  std::vector<std::vector<point>> series;
  std::set<const ckpt::runtime*> warmed;
  std::string error;
  auto measure = [&](point p, std::uint64_t leaves, std::uint64_t chunk,
                     std::shared_ptr<ckpt::runtime> rt) -> bool {
    p.bytes = p.bytes ? p.bytes : fixed;
    p.threads = rt->cpu_threads();
    ckpt::tree t = ckpt::perf::gaussian_tree(pool, p.bytes, leaves);
    // A fresh runtime's staging pool is empty: its first save faults its buffers in. One
    // untimed save warms each runtime, so that points measure steady-state checkpoints.
    if (warmed.insert(rt.get()).second) {
      fs::path target = fs::path(dir) / "ckpt-perf-sweep-warmup";
      fs::remove_all(target);
      ckpt::save_options so;
      so.runtime = rt;
      (void)ckpt::save_blocking(target, ckpt::perf::gaussian_tree(pool, fixed, 584), {}, so);
      fs::remove_all(target);
    }
    // `runs` alternations of raw baseline and save; the point is the run with the median save.
    std::vector<point> tries;
    for (int r = 0; r < runs; ++r) {
      point q = p;
      auto raw = ckpt::perf::raw_write_read_gibps(dir, q.bytes, {.read = false});
      if (!raw) {
        error = raw.error().what();
        return false;
      }
      q.raw_gibps = raw.value().write_gibps;
      fs::path target = fs::path(dir) / "ckpt-perf-sweep";
      fs::remove_all(target);
      ckpt::perf::prefault(2 * q.bytes);
      ckpt::save_options so;
      so.chunk_bytes = chunk;
      so.runtime = rt;
      auto t0 = std::chrono::steady_clock::now();
      auto s = ckpt::save_blocking(target, t, {}, so);
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      fs::remove_all(target);
      if (!s) {
        error = s.error().what();
        return false;
      }
      q.st = s.value();
      q.save_gibps = double(q.bytes) / secs / gib;
      tries.push_back(q);
    }
    std::sort(tries.begin(), tries.end(),
              [](const point& a, const point& b) { return a.save_gibps < b.save_gibps; });
    p = tries[tries.size() / 2];
    p.min_gibps = tries.front().save_gibps;
    p.max_gibps = tries.back().save_gibps;
    if (!json) {
      std::fprintf(stderr, "  %-8s %-10s %.2f GiB/s (raw %.2f)\n", p.series.c_str(),
                   p.label.c_str(), p.save_gibps, p.raw_gibps);
    }
    series.back().push_back(std::move(p));
    return true;
  };
  auto make_rt = [&](unsigned threads, unsigned depth) -> std::shared_ptr<ckpt::runtime> {
    ckpt::runtime_options ro;
    ro.cpu_threads = threads;
    if (depth) ro.io.queue_depth = depth;  // 0: keep the engine default
    auto rt = ckpt::runtime::create(ro);
    if (!rt) return nullptr;
    return std::move(rt).value();
  };

  series.emplace_back();
  for (auto b : sizes) {
    if (!measure({.series = "size", .label = size_label(b), .x = double(b), .bytes = b}, 584,
                 4ull << 20, default_rt.value()))
      break;
  }
  series.emplace_back();
  for (std::uint64_t n : {10ull, 100ull, 1000ull, 10000ull, 100000ull}) {
    if (!error.empty()) break;
    measure({.series = "leaves", .label = std::to_string(n), .x = double(n)}, n, 4ull << 20,
            default_rt.value());
  }
  series.emplace_back();
  for (std::uint64_t c : {256ull << 10, 1ull << 20, 4ull << 20, 16ull << 20}) {
    if (!error.empty()) break;
    measure({.series = "chunk", .label = size_label(c), .x = double(c)}, 584, c,
            default_rt.value());
  }
  series.emplace_back();
  for (unsigned th = 1; th <= std::max(2u, cores) && error.empty(); ++th) {
    auto rt = make_rt(th, 0);
    if (!rt) {
      error = "runtime::create failed";
      break;
    }
    measure({.series = "threads", .label = std::to_string(th), .x = double(th)}, 584, 4ull << 20,
            rt);
  }
  series.emplace_back();
  for (unsigned qd : {4u, 8u, 16u, 32u, 64u}) {
    if (!error.empty()) break;
    auto rt = make_rt(0, qd);
    if (!rt) {
      error = "runtime::create failed";
      break;
    }
    measure({.series = "depth", .label = std::to_string(qd), .x = double(qd)}, 584, 4ull << 20, rt);
  }
  if (!error.empty()) {
    std::fprintf(stderr, "ckpt-perf sweep: %s\n", error.c_str());
    return 1;
  }

  const char* method =
      "synthetic N(0,0.02) f32 trees (borrowed views), runtimes warmed by one untimed save, per "
      "point and run: raw baseline, 2x "
      "pre-fault, one durable save timed call -> commit, median run kept; raw = O_DIRECT io_uring "
      "write+fsync of the same bytes (4 MiB x32); fixed points: 584 leaves, 4 MiB chunks, default "
      "runtime";
  if (json) {
    boost::json::object j{{"bench", "sweep"},
                          {"method", method},
                          {"quick", quick},
                          {"machine", ckpt::perf::machine_facts(dir)}};
    boost::json::object ser;
    for (const auto& s : series) {
      boost::json::array arr;
      for (const auto& p : s) {
        arr.push_back({{"label", p.label},
                       {"x", p.x},
                       {"bytes", p.bytes},
                       {"save_gibps", p.save_gibps},
                       {"save_gibps_min", p.min_gibps},
                       {"save_gibps_max", p.max_gibps},
                       {"raw_write_gibps", p.raw_gibps},
                       {"ratio_vs_raw", p.raw_gibps > 0 ? p.save_gibps / p.raw_gibps : 0.0},
                       {"cpu_threads", p.threads},
                       {"stages",
                        {{"staged_s", p.st.staged_s},
                         {"encode_cpu_s", p.st.encode_s},
                         {"written_s", p.st.written_s},
                         {"fsync_s", p.st.fsync_s},
                         {"commit_s", p.st.commit_s},
                         {"committed_s", p.st.committed_s}}}});
      }
      if (!s.empty()) {
        ser[s[0].series] = {{"points", arr}, {"bend", bend_line(s)}};
      }
    }
    j["series"] = std::move(ser);
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return 0;
  }
  std::printf(
      "sweep (%s, %d run(s) per point, the median run shown with the min-max of "
      "GiB/s): %s\n",
      quick ? "quick" : "full", runs, ckpt::perf::machine_line(dir).c_str());
  std::printf("  method: %s\n", method);
  std::printf("  %-8s %-10s %9s %11s %9s %6s %8s %9s %9s %8s %8s\n", "series", "point", "GiB/s",
              "min-max", "raw GiB/s", "ratio", "staged", "encode", "written", "fsync", "commit");
  for (const auto& s : series) {
    for (const auto& p : s) {
      char mm[32];
      std::snprintf(mm, sizeof mm, "%.2f-%.2f", p.min_gibps, p.max_gibps);
      std::printf("  %-8s %-10s %9.2f %11s %9.2f %6.2f %7.3fs %8.2fc %8.3fs %7.3fs %7.3fs\n",
                  p.series.c_str(), p.label.c_str(), p.save_gibps, mm, p.raw_gibps,
                  p.raw_gibps > 0 ? p.save_gibps / p.raw_gibps : 0.0, p.st.staged_s, p.st.encode_s,
                  p.st.written_s, p.st.fsync_s, p.st.commit_s);
    }
  }
  std::printf(
      "  (encode in CPU-seconds summed over threads; other stages wall seconds from the "
      "save's start, fsync/commit as durations)\n");
  for (const auto& s : series)
    std::printf("  bend: %s\n", bend_line(s).c_str());
  return 0;
}

ckpt::perf::register_command sweep_cmd("sweep",
                                       "save throughput vs size, leaves, chunk, threads, depth",
                                       sweep_main);

}  // namespace
