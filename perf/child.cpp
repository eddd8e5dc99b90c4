// ckpt-perf-child: the fresh-process half of `ckpt-perf save` and `ckpt-perf load`.
//
//   ckpt-perf-child save|load --workload W --target PATH
//
// Builds the WORKLOADS.md tree (save) or a destination of its shapes (load), resets the
// peak-RSS mark, times one save_blocking (or load_blocking into the destination, checksums
// verified) and prints the figures as one JSON object. A program of its own that links libckpt
// alone: ckpt-perf links libtorch and MPI, whose pages (~150 MiB) would otherwise count in the
// peak RSS that a user of ckpt does not pay.
#include "workloads.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <boost/json/serialize.hpp>

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  std::string workload, target;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--workload") workload = argv[i + 1];
    if (a == "--target") target = argv[i + 1];
  }
  const bool save = mode == "save";
  auto t = ckpt::perf::make_workload(workload);
  if ((!save && mode != "load") || !t || target.empty()) {
    std::fprintf(stderr, "usage: ckpt-perf-child save|load --workload W --target PATH\n");
    return 2;
  }
  boost::json::object j;
  ckpt::tree dest;
  if (!save) {
    dest = ckpt::perf::destination_like(t.value());
    t.value() = ckpt::tree();
    ::malloc_trim(0);  // the generated tree's pages go back before the mark is reset
  }
  ckpt::perf::reset_peak_rss();
  const std::uint64_t before = ckpt::perf::peak_rss_bytes();  // (the mark is the RSS now)
  const auto t0 = std::chrono::steady_clock::now();
  auto secs = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (save) {
    auto s = ckpt::save_blocking(target, t.value(), {{"workload", workload}});
    j["secs"] = secs();
    if (!s) {
      std::fprintf(stderr, "ckpt-perf-child save: %s\n", s.error().what().c_str());
      return 1;
    }
    const auto& st = s.value();
    j["stored_bytes"] = st.stored_bytes;
    j["direct_bytes"] = st.direct_bytes;
    j["staged_s"] = st.staged_s;
    j["encode_s"] = st.encode_s;
    j["written_s"] = st.written_s;
    j["fsync_s"] = st.fsync_s;
    j["commit_s"] = st.commit_s;
  } else {
    auto l = ckpt::load_blocking(target, &dest);
    j["secs"] = secs();
    if (!l) {
      std::fprintf(stderr, "ckpt-perf-child load: %s\n", l.error().what().c_str());
      return 1;
    }
  }
  j["peak_rss_bytes"] = ckpt::perf::peak_rss_bytes();
  j["added_rss_bytes"] = ckpt::perf::peak_rss_bytes() - before;
  std::printf("%s\n", boost::json::serialize(j).c_str());
  return 0;
}
