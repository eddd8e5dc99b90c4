#include "fio.hpp"

#include "bench_util.hpp"
#include "raw_io.hpp"

#include <boost/json/parse.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace ckpt::perf {

bool have_fio() {
  return std::system("command -v fio >/dev/null 2>&1") == 0;
}

std::optional<double> fio_gibps(const std::string& dir, std::uint64_t bytes, bool write,
                                std::string* why, int numjobs) {
  if (!have_fio()) {
    if (why) *why = "fio not installed";
    return std::nullopt;
  }
  numjobs = std::max(1, numjobs);
  // One file per job: ckpt-perf-fio.dat.<job> (fio's $jobnum).
  const std::string files = "--directory=" + dir + " '--filename_format=ckpt-perf-fio.dat.$jobnum'";
  const std::string jobs =
      numjobs > 1 ? " --numjobs=" + std::to_string(numjobs) + " --group_reporting" : "";
  std::string size = std::to_string(bytes / (1 << 20)) + "M";
  const std::string common =
      " --ioengine=io_uring --direct=1 --bs=4M --iodepth=" + std::to_string(baseline_depth) +
      " --size=" + size + " " + files + jobs;
  std::string cmd = "fio --name=baseline --output-format=json" + common +
                    (write ? " --rw=write --end_fsync=1" : " --rw=read") + " 2>/dev/null";
  if (!write) {
    // Lay the files out first (untimed), then drop the cache.
    std::system(("fio --name=layout" + common + " --rw=write >/dev/null 2>&1").c_str());
    drop_page_cache();
  }
  std::string out = run_capture(cmd);
  std::error_code ec;
  for (int j = 0; j < numjobs; ++j)
    std::filesystem::remove(dir + "/ckpt-perf-fio.dat." + std::to_string(j), ec);
  boost::json::error_code jec;
  auto pos = out.find('{');
  if (pos == std::string::npos) {
    if (why) *why = "fio printed no JSON";
    return std::nullopt;
  }
  auto v = boost::json::parse(std::string_view(out).substr(pos), jec);
  if (jec || !v.is_object()) {
    if (why) *why = "fio output unreadable";
    return std::nullopt;
  }
  try {
    const auto& job = v.at("jobs").as_array().at(0).as_object();
    const auto& side = job.at(write ? "write" : "read").as_object();
    double io_bytes = static_cast<double>(side.at("io_bytes").to_number<std::int64_t>());
    // One job: job_runtime (ms) includes the end_fsync. A group: the side's runtime, the
    // slowest job's (job_runtime sums the jobs').
    double ms =
        numjobs > 1 ? 0.0 : static_cast<double>(job.at("job_runtime").to_number<std::int64_t>());
    if (ms <= 0) ms = static_cast<double>(side.at("runtime").to_number<std::int64_t>());
    if (ms <= 0) return std::nullopt;
    return io_bytes / (ms / 1000.0) / (1024.0 * 1024.0 * 1024.0);
  } catch (const std::exception& e) {
    if (why) *why = std::string("fio JSON: ") + e.what();
    return std::nullopt;
  }
}

std::string drop_page_cache() {
  ::sync();
  if (::geteuid() != 0) return "no drop (not root; O_DIRECT reads bypass the cache)";
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3";
  return f ? "drop_caches" : "drop_caches refused";
}

}  // namespace ckpt::perf
