#include "bench_util.hpp"

#include <boost/json/parse.hpp>

#include <sys/statfs.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <thread>

namespace ckpt::perf {

spread summarize(std::vector<double> v) {
  spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.median = v[v.size() / 2];
  s.min = v.front();
  s.max = v.back();
  s.n = static_cast<int>(v.size());
  return s;
}

double mean_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

boost::json::object to_json(const spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"n", s.n}};
}

std::string describe(const spread& s, const char* fmt) {
  char a[32], b[32], c[32];
  std::snprintf(a, sizeof a, fmt, s.median);
  if (s.n <= 1) return a;
  std::snprintf(b, sizeof b, fmt, s.min);
  std::snprintf(c, sizeof c, fmt, s.max);
  return std::string(a) + " (" + b + "-" + c + ")";
}

namespace {

std::string fs_type_name(const std::string& dir) {
  struct statfs sf {};
  if (::statfs(dir.c_str(), &sf) != 0) return "unknown";
  switch (static_cast<unsigned long>(sf.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x01021994:
      return "tmpfs";
    case 0x794C7630:
      return "overlayfs";
    case 0x2FC12FC1:
      return "zfs";
    case 0x6969:
      return "nfs";
    case 0xF2F52010:
      return "f2fs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(sf.f_type));
      return buf;
    }
  }
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(line.find_first_not_of(' ', pos + 1));
    }
  }
  return "unknown";
}

std::string kernel_release() {
  struct utsname u {};
  return ::uname(&u) == 0 ? u.release : "unknown";
}

}  // namespace

boost::json::object machine_facts(const std::string& dir) {
  return {{"cores", std::thread::hardware_concurrency()},
          {"kernel", kernel_release()},
          {"cpu_model", cpu_model()},
          {"fs_type", fs_type_name(dir)},
          {"dir", dir},
          {"load_average_1m", load_average()}};
}

std::string machine_line(const std::string& dir) {
  return std::to_string(std::thread::hardware_concurrency()) + " cores, " + cpu_model() +
         ", kernel " + kernel_release() + ", " + fs_type_name(dir) + " at " + dir;
}

double load_average() {
  double l[1] = {0};
  return ::getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    if (status) *status = -1;
    return out;
  }
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  const int st = ::pclose(p);
  if (status) *status = st;
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s)
    out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("ckpt-perf") : p.string();
}

std::string default_mpirun() {
#ifdef CKPT_MPIEXEC
  return CKPT_MPIEXEC;
#else
  return "mpirun";
#endif
}

result<boost::json::object> run_mpi_worker(const std::string& mpirun, int ranks,
                                           const std::string& worker_args,
                                           std::string_view marker) {
  const std::string cmd = shell_quote(mpirun) + " --oversubscribe --allow-run-as-root -np " +
                          std::to_string(ranks) + " " + shell_quote(self_exe()) + " " +
                          worker_args + " 2>&1";
  int status = 0;
  const std::string out = run_capture(cmd, &status);
  if (status == -1) return fail(errc::invalid_argument, "cannot run " + mpirun);
  const auto at = out.rfind(marker);
  if (status != 0 || at == std::string::npos) {
    return fail(errc::aborted, "the " + std::to_string(ranks) + "-rank job failed:\n" + out);
  }
  boost::json::error_code ec;
  auto v = boost::json::parse(out.substr(at, out.find('\n', at) - at), ec);
  if (ec || !v.is_object()) return fail(errc::aborted, "unexpected worker output:\n" + out);
  return std::move(v.as_object());
}

}  // namespace ckpt::perf
