// ckpt-inspect verify CKPT_DIR: every checksum, the commit marker, every chunk decodable.
// The work is ckpt::verify_checkpoint (include/ckpt/verify.hpp); this draws the progress bar
// and prints the report.
#include "common.hpp"

#include <ckpt/verify.hpp>

#include <boost/json/array.hpp>

#include <unistd.h>

#include <chrono>

namespace ckpt::inspect {

namespace {

using clock_type = std::chrono::steady_clock;

// A one-line progress bar on stderr, redrawn at most 10 times a second, and only once the run
// has taken more than half a second (short runs stay silent).
class progress_bar {
 public:
  progress_bar() : start_(clock_type::now()) {}
  void update(const verify_progress& p) {
    const auto now = clock_type::now();
    if (now - start_ < std::chrono::milliseconds(500)) return;
    if (drawn_ && now - last_ < std::chrono::milliseconds(100) && p.bytes_done < p.bytes_total)
      return;
    last_ = now;
    drawn_ = true;
    const double frac =
        p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1;
    constexpr int width = 30;
    const int filled = static_cast<int>(frac * width);
    const double secs = std::chrono::duration<double>(now - start_).count();
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, ' ');
    std::fprintf(
        stderr, "\r\x1b[Kverify [%s] %3d%%  %s / %s  %s/s", bar.c_str(),
        static_cast<int>(frac * 100), human_bytes(p.bytes_done).c_str(),
        human_bytes(p.bytes_total).c_str(),
        human_bytes(static_cast<std::uint64_t>(static_cast<double>(p.bytes_done) / secs)).c_str());
  }
  void clear() {
    if (drawn_) std::fprintf(stderr, "\r\x1b[K");
  }

 private:
  clock_type::time_point start_, last_;
  bool drawn_ = false;
};

std::string where_of(const verify_problem& p) {
  std::string w = p.file;
  if (!p.leaf.empty()) w += ", leaf \"" + p.leaf + "\"";
  if (p.chunk >= 0) w += ", chunk " + std::to_string(p.chunk);
  if (p.offset >= 0) w += " at offset " + std::to_string(p.offset);
  return w;
}

}  // namespace

int verify_main(const args& a) {
  expect_positional(a, 1, "verify CKPT_DIR [--json]");
  const std::string path = a.positional[0];
  verify_options opt;
  progress_bar bar;
  if (::isatty(2) == 1) opt.progress = [&bar](const verify_progress& p) { bar.update(p); };
  const auto t0 = clock_type::now();
  auto r = verify_checkpoint_blocking(path, opt);
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  bar.clear();
  if (!r)
    throw tool_error(r.error().message().empty() ? r.error().what() : r.error().message(),
                     exit_usage);
  const verify_report& rep = r.value();
  if (a.json) {
    boost::json::array problems;
    for (const auto& p : rep.problems) {
      boost::json::object o;
      o["file"] = p.file;
      if (p.leaf.empty()) {
        o["leaf"] = nullptr;
      } else {
        o["leaf"] = p.leaf;
      }
      if (p.chunk >= 0) {
        o["chunk"] = p.chunk;
      } else {
        o["chunk"] = nullptr;
      }
      if (p.offset >= 0) {
        o["offset"] = p.offset;
      } else {
        o["offset"] = nullptr;
      }
      o["message"] = p.message;
      problems.push_back(std::move(o));
    }
    print_json(boost::json::object{{"path", path},
                                   {"ok", rep.ok()},
                                   {"committed", rep.committed},
                                   {"files", rep.files},
                                   {"leaves", rep.leaves},
                                   {"chunks", rep.chunks},
                                   {"chunks_checked", rep.chunks_checked},
                                   {"logical_bytes", rep.logical_bytes},
                                   {"stored_bytes", rep.stored_bytes},
                                   {"bytes_read", rep.bytes_read},
                                   {"seconds", secs},
                                   {"problems", std::move(problems)}});
    return rep.ok() ? exit_ok : exit_fail;
  }
  const double gibps = secs > 0 ? static_cast<double>(rep.bytes_read) / secs / (1ull << 30) : 0;
  if (rep.ok()) {
    std::printf(
        "%s: %s, %llu leaves, %llu chunks in %llu data file%s checked; logical %s, "
        "data files %s; %.2f s, %.2f GiB/s\n",
        path.c_str(), green("OK").c_str(), static_cast<unsigned long long>(rep.leaves),
        static_cast<unsigned long long>(rep.chunks), static_cast<unsigned long long>(rep.files),
        rep.files == 1 ? "" : "s", human_bytes(rep.logical_bytes).c_str(),
        human_bytes(rep.stored_bytes).c_str(), secs, gibps);
    return exit_ok;
  }
  const std::size_t n = rep.problems.size();
  std::printf("%s: %s, %zu problem%s%s\n", path.c_str(), red("FAILED").c_str(), n,
              n == 1 ? "" : "s", rep.committed ? "" : " (not a committed checkpoint)");
  for (const auto& p : rep.problems)
    std::printf("  %s: %s\n", where_of(p).c_str(), p.message.c_str());
  if (rep.chunks) {
    std::printf("%llu of %llu chunks sound\n", static_cast<unsigned long long>(rep.chunks_checked),
                static_cast<unsigned long long>(rep.chunks));
  }
  return exit_fail;
}

}  // namespace ckpt::inspect
