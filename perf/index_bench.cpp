// ckpt-perf index: how fast a load parses and validates a checkpoint's index.json.
//
//   ckpt-perf index [--workload small|dense|sparse|bf16] [--dir DIR] [--runs N] [--json]
//
// Method: save the workload once (untimed) into DIR, read its index.json into a padded buffer,
// then time format::parse_index (simdjson On Demand, every cap and cross-check of FORMAT.md:
// names, shapes, chunk table and extents, dict keys, leaf paths against the tree; the leaf table
// and the tree's node list built; one thread) N times; MB/s = index bytes / median time. The
// parser of the thread is reused across runs, as a process that loads several checkpoints
// reuses it; the first parse (buffers allocated) is reported apart. Also timed apart:
// format::structure(), the tree of array specs some readers build from the node list (a whole
// load builds its result tree from the node list directly instead). The small workload (20,000
// leaves) is the one that matters: its index is ~2.8 MB.
#include "bench_util.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include "format/index.hpp"

#include <ckpt/save.hpp>

#include <boost/json/serialize.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

int index_main(int argc, char** argv) {
  std::string workload = "small", dir = "/work/perfdir-index";
  int runs = 20;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
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
                   "usage: ckpt-perf index [--workload small|dense|sparse|bf16] [--dir DIR] "
                   "[--runs N] [--json]\n");
      return 2;
    }
  }
  auto t = ckpt::perf::make_workload(workload);
  if (!t) {
    std::fprintf(stderr, "ckpt-perf index: %s\n", t.error().message().c_str());
    return 1;
  }
  const fs::path ck = fs::path(dir) / ("index-" + workload);
  std::error_code ec;
  fs::remove_all(ck, ec);
  fs::create_directories(dir, ec);
  if (auto s = ckpt::save_blocking(ck, t.value(), {}); !s) {
    std::fprintf(stderr, "ckpt-perf index: save %s: %s\n", ck.c_str(), s.error().message().c_str());
    return 1;
  }
  std::ifstream in(ck / ckpt::format::index_file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  const std::size_t n = text.size();
  text.resize(n + ckpt::format::parse_padding, '\0');
  const std::string_view view(text.data(), n);

  std::vector<double> secs, mbps, tree_secs;
  std::size_t leaves = 0;
  double first_s = 0;
  for (int r = 0; r <= runs; ++r) {
    auto t0 = clock_type::now();
    auto ix = ckpt::format::parse_index(view);
    double s = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (!ix) {
      std::fprintf(stderr, "ckpt-perf index: parse: %s\n", ix.error().message().c_str());
      return 1;
    }
    leaves = ix.value().leaves.size();
    if (r == 0) {  // (the thread's parser allocates its buffers)
      first_s = s;
      continue;
    }
    secs.push_back(s);
    mbps.push_back(static_cast<double>(n) / s / 1e6);
    auto t1 = clock_type::now();
    const ckpt::tree specs = ckpt::format::structure(ix.value());
    tree_secs.push_back(std::chrono::duration<double>(clock_type::now() - t1).count());
    if (specs.num_leaves() != leaves) return 1;
  }
  const double tree_ms = ckpt::perf::summarize(tree_secs).median * 1e3;
  auto sp = ckpt::perf::summarize(mbps);
  boost::json::object j{{"bench", "index"},
                        {"workload", workload},
                        {"index_bytes", n},
                        {"leaves", leaves},
                        {"runs", runs},
                        {"parse_mbps", sp.median},
                        {"parse_mbps_spread", ckpt::perf::to_json(sp)},
                        {"parse_s_median", ckpt::perf::summarize(secs).median},
                        {"first_parse_s", first_s},
                        {"spec_tree_s_median", tree_ms / 1e3}};
  if (json) {
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return 0;
  }
  std::printf("index parse + validation (%s, %zu leaves, %.2f MB of JSON, %d runs)\n",
              workload.c_str(), leaves, static_cast<double>(n) / 1e6, runs);
  std::printf(
      "  method: format::parse_index (simdjson On Demand + checks) on a padded in-memory copy of "
      "index.json (caps, "
      "names, shapes, chunk table and extents, dict keys, leaf paths; leaf table and node list "
      "built)\n");
  std::printf("  %.0f MB/s median (min %.0f, max %.0f), %.2f ms per parse\n", sp.median, sp.min,
              sp.max, ckpt::perf::summarize(secs).median * 1e3);
  std::printf("  first parse of the process (parser buffers allocated): %.2f ms\n", first_s * 1e3);
  std::printf("  apart: format::structure() (tree of array specs from the node list) %.2f ms\n",
              tree_ms);
  return 0;
}

ckpt::perf::register_command index_cmd("index", "parse + validation speed of index.json",
                                       index_main);

}  // namespace
