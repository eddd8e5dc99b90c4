// ckpt-perf save | load: the WORKLOADS.md trees through the save and load pipelines, with the
// fio baseline of the same byte count in the same folder, alternated with our runs.
//
//   ckpt-perf save --workload dense|sparse|small|bf16 --dir DIR [--runs N] [--no-fio] [--json]
//   ckpt-perf load --workload dense|sparse|small|bf16 --dir DIR [--runs N] [--no-fio] [--json] [--keep]
//
// Method (save): generate the tree (untimed, owned leaves), pre-fault 2x its bytes (untimed),
// reset the peak-RSS mark, then time save_blocking() from the call to the commit (fsyncs,
// index, marker, rename and directory fsyncs included). Logical GiB/s = tree bytes / that time.
// fio: --rw=write --bs=4M --iodepth=16 --direct=1 --ioengine=io_uring --end_fsync=1 over the
// same byte count. Method (load): save once (untimed), drop the page cache (root), restore into
// pre-touched destination buffers with checksums verified; fio --rw=read likewise.
#include "fio.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

struct options {
  std::string workload;
  std::string dir;
  int runs = 1;
  bool fio = true;
  bool json = false;
  bool keep = false;  // load: leave the checkpoint on disk
};

int parse(int argc, char** argv, options& o, const char* name) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--workload") {
      const char* v = next();
      if (!v) return 2;
      o.workload = v;
    } else if (a == "--dir") {
      const char* v = next();
      if (!v) return 2;
      o.dir = v;
    } else if (a == "--runs") {
      const char* v = next();
      if (!v) return 2;
      o.runs = std::max(1, std::atoi(v));
    } else if (a == "--no-fio") {
      o.fio = false;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--keep") {
      o.keep = true;
    } else {
      std::fprintf(stderr, "ckpt-perf %s: unknown argument %s\n", name, a.c_str());
      return 2;
    }
  }
  if (o.workload.empty() || o.dir.empty()) {
    std::fprintf(stderr,
                 "usage: ckpt-perf %s --workload dense|sparse|small|bf16 --dir DIR [--runs N] "
                 "[--no-fio] [--json] [--keep]\n",
                 name);
    return 2;
  }
  return 0;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

constexpr double gib = 1024.0 * 1024.0 * 1024.0;

int save_main(int argc, char** argv) {
  options o;
  if (int rc = parse(argc, argv, o, "save")) return rc;
  auto t = ckpt::perf::make_workload(o.workload);
  if (!t) {
    std::fprintf(stderr, "ckpt-perf save: %s\n", t.error().what().c_str());
    return 2;
  }
  const std::uint64_t logical = t.value().num_bytes();
  fs::create_directories(o.dir);
  std::vector<double> ours, fio, staged;
  std::uint64_t stored = 0, peak = 0;
  ckpt::save_stats last{};
  std::string fio_note;
  for (int r = 0; r < o.runs; ++r) {
    if (o.fio) {
      if (auto f = ckpt::perf::fio_gibps(o.dir, logical, true, &fio_note)) fio.push_back(*f);
    }
    fs::path target = fs::path(o.dir) / ("ckpt-perf-save-" + o.workload);
    fs::remove_all(target);
    ckpt::perf::prefault(2 * logical);
    ckpt::perf::reset_peak_rss();
    auto t0 = clock_type::now();
    auto s = ckpt::save_blocking(target, t.value(), {{"workload", o.workload}});
    double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    peak = std::max(peak, ckpt::perf::peak_rss_bytes());
    if (!s) {
      std::fprintf(stderr, "ckpt-perf save: %s\n", s.error().what().c_str());
      return 1;
    }
    last = s.value();
    stored = last.stored_bytes;
    ours.push_back(logical / secs / gib);
    staged.push_back(last.staged_s);
    fs::remove_all(target);
  }
  const double save_gibps = median(ours);
  const double fio_gibps = median(fio);
  const double save_s = logical / gib / save_gibps;
  if (o.json) {
    boost::json::object j{{"workload", o.workload},
                          {"logical_bytes", logical},
                          {"stored_bytes", stored},
                          {"compression_ratio", stored ? double(logical) / double(stored) : 0.0},
                          {"save_s", save_s},
                          {"save_gibps", save_gibps},
                          {"staged_s", median(staged)},
                          {"peak_rss_bytes", peak},
                          {"runs", o.runs},
                          {"stages", {{"encode_cpu_s", last.encode_s},
                                      {"written_s", last.written_s},
                                      {"fsync_s", last.fsync_s},
                                      {"commit_s", last.commit_s}}}};
    if (!fio.empty()) {
      j["fio_write_gibps"] = fio_gibps;
      j["ratio_vs_fio"] = save_gibps / fio_gibps;
    }
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return 0;
  }
  std::printf("save %s: %.3f GiB logical, %.3f GiB stored (ratio %.2f), %d run(s), median\n",
              o.workload.c_str(), logical / gib, stored / gib,
              stored ? double(logical) / double(stored) : 0.0, o.runs);
  std::printf("  method: durable save (commit included) of owned leaves after a 2x pre-fault; "
              "chunks 4 MiB, O_DIRECT, io_uring\n");
  std::printf("  save     %.3f s   %.2f GiB/s   staged after %.3f s   peak RSS %.2f GiB\n", save_s,
              save_gibps, median(staged), peak / gib);
  std::printf("  stages   encode %.2f CPU-s, last write at %.3f s, fsync %.3f s, commit %.3f s\n",
              last.encode_s, last.written_s, last.fsync_s, last.commit_s);
  if (!fio.empty()) {
    std::printf("  fio      %.2f GiB/s (write, bs 4M, iodepth 16, direct, end_fsync)   ratio %.2f\n",
                fio_gibps, save_gibps / fio_gibps);
  } else if (o.fio) {
    std::printf("  fio      unavailable: %s\n", fio_note.c_str());
  }
  return 0;
}

int load_main(int argc, char** argv) {
  options o;
  if (int rc = parse(argc, argv, o, "load")) return rc;
  auto t = ckpt::perf::make_workload(o.workload);
  if (!t) {
    std::fprintf(stderr, "ckpt-perf load: %s\n", t.error().what().c_str());
    return 2;
  }
  const std::uint64_t logical = t.value().num_bytes();
  fs::create_directories(o.dir);
  fs::path target = fs::path(o.dir) / ("ckpt-perf-load-" + o.workload);
  fs::remove_all(target);
  if (auto s = ckpt::save_blocking(target, t.value(), {}); !s) {
    std::fprintf(stderr, "ckpt-perf load: saving the checkpoint: %s\n", s.error().what().c_str());
    return 1;
  }
  ckpt::tree dest = ckpt::perf::destination_like(t.value());
  std::vector<double> ours, fio;
  std::string cache, fio_note;
  bool verified = true;
  for (int r = 0; r < o.runs; ++r) {
    if (o.fio) {
      if (auto f = ckpt::perf::fio_gibps(o.dir, logical, false, &fio_note)) fio.push_back(*f);
    }
    cache = ckpt::perf::drop_page_cache();
    auto t0 = clock_type::now();
    auto l = ckpt::load_blocking(target, &dest);
    double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (!l) {
      std::fprintf(stderr, "ckpt-perf load: %s\n", l.error().what().c_str());
      return 1;
    }
    ours.push_back(logical / secs / gib);
    if (r == 0) verified = l.value().tree == t.value();
  }
  if (!o.keep) fs::remove_all(target);
  const double load_gibps = median(ours);
  const double fio_gibps = median(fio);
  if (o.json) {
    boost::json::object j{{"workload", o.workload},   {"logical_bytes", logical},
                          {"load_s", logical / gib / load_gibps}, {"load_gibps", load_gibps},
                          {"verified", verified},      {"cache", cache},
                          {"runs", o.runs}};
    if (!fio.empty()) {
      j["fio_read_gibps"] = fio_gibps;
      j["ratio_vs_fio"] = load_gibps / fio_gibps;
    }
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return verified ? 0 : 1;
  }
  std::printf("load %s: %.3f GiB logical, %d run(s), median; page cache: %s\n", o.workload.c_str(),
              logical / gib, o.runs, cache.c_str());
  std::printf("  method: restore into pre-touched destination buffers, checksums verified, "
              "O_DIRECT reads through io_uring\n");
  std::printf("  load     %.3f s   %.2f GiB/s   %s\n", logical / gib / load_gibps, load_gibps,
              verified ? "verified bit-exact" : "MISMATCH");
  if (!fio.empty()) {
    std::printf("  fio      %.2f GiB/s (read, bs 4M, iodepth 16, direct)   ratio %.2f\n", fio_gibps,
                load_gibps / fio_gibps);
  } else if (o.fio) {
    std::printf("  fio      unavailable: %s\n", fio_note.c_str());
  }
  return verified ? 0 : 1;
}

ckpt::perf::register_command save_cmd("save", "save a WORKLOADS.md tree (durable)", save_main);
ckpt::perf::register_command load_cmd("load", "load a WORKLOADS.md tree (cold cache)", load_main);

}  // namespace
