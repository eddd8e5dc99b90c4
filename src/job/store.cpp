#include <ckpt/load.hpp>
#include <ckpt/store.hpp>

#include "checkpoint/durable.hpp"
#include "checkpoint/files.hpp"
#include "io/async.hpp"
#include "pipeline/load_ranges.hpp"
#include "pipeline/runtime_impl.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <string>

namespace ckpt::store {

namespace fs = std::filesystem;
namespace asio = boost::asio;

namespace {

// Runs one of the checkpoint layer's coroutines on `rt`'s engine, blocking this thread.
template <class Op>
auto blocking(const std::shared_ptr<runtime>& rt, Op&& op) {
  auto r = runtime_or_global(rt);
  return detail::run_blocking(r->executor(), std::forward<Op>(op)(r->io()));
}

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

// The last run of digits in `name` as a number (none when there is none or it overflows).
std::optional<std::uint64_t> last_number(std::string_view name) {
  std::size_t end = name.size();
  while (end > 0 && !is_digit(name[end - 1]))
    --end;
  if (end == 0) return std::nullopt;
  std::size_t begin = end;
  while (begin > 0 && is_digit(name[begin - 1]))
    --begin;
  std::uint64_t v = 0;
  for (std::size_t i = begin; i < end; ++i) {
    std::uint64_t d = static_cast<std::uint64_t>(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// Parses ".<name>.<tag>-<pid>-<rest>" (tag "tmp" or "trash"); returns the pid part, or none
// when `entry` is not of that shape.
std::optional<std::string> transient_owner(std::string_view entry, std::string_view tag) {
  if (entry.size() < 2 || entry[0] != '.') return std::nullopt;
  const std::string marker = "." + std::string(tag) + "-";
  const std::size_t at = entry.rfind(marker);
  if (at == std::string_view::npos || at < 2) return std::nullopt;  // name must be non-empty
  std::string_view rest = entry.substr(at + marker.size());
  if (rest.empty()) return std::nullopt;
  // Our suffixes are "<pid>-<token>" (checkpoint::unique_suffix): anything else is not ours.
  const std::size_t dash = rest.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == rest.size()) return std::nullopt;
  std::string_view pid = rest.substr(0, dash);
  if (!std::all_of(pid.begin(), pid.end(), is_digit)) return std::nullopt;
  return std::string(pid);
}

// `job_dir / suffix` exists and is a committed checkpoint (errc::not_found, not_committed).
asio::awaitable<result<void>> check_is_committed(io::engine& io, fs::path job_dir,
                                                 fs::path suffix) {
  const fs::path dir = job_dir / suffix;
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      co_return fail(error(ec, "stat " + dir.string()));
    }
    co_return fail(errc::not_found, "checkpoint " + dir.string() + " does not exist");
  }
  CKPT_CO_TRY(bool committed, co_await detail::committed(io, dir));
  if (!committed) {
    co_return fail(errc::not_committed,
                   dir.string() + " is not a committed checkpoint (no valid commit marker)");
  }
  co_return success();
}

// The bodies of list_committed, write_latest and read_latest: coroutines on the engine's
// threads, run there by the blocking forms and awaited through run_on by the async_ forms.

asio::awaitable<result<std::vector<std::string>>> list_on(io::engine& io, fs::path job_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(job_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) co_return out;
    co_return fail(error(ec, "list " + job_dir.string()));
  }
  for (const auto& entry : it) {
    std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // temporary, trash, hidden: never listed
    std::error_code dec;
    if (!entry.is_directory(dec)) continue;
    auto committed = co_await detail::committed(io, entry.path());
    if (!committed)
      co_return fail(std::move(committed).error().with_context("list " + job_dir.string()));
    if (committed.value()) out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end(),
            [](const std::string& x, const std::string& y) { return natural_less(x, y); });
  co_return out;
}

asio::awaitable<result<void>> write_latest_on(io::engine& io, fs::path job_dir, fs::path suffix) {
  const std::string context = "register " + suffix.string() + " as latest in " + job_dir.string();
  auto relative = check_relative(suffix, "checkpoint suffix");
  if (!relative) co_return fail(std::move(relative).error().with_context(context));
  auto committed = co_await check_is_committed(io, job_dir, suffix);
  if (!committed) co_return fail(std::move(committed).error().with_context(context));
  auto written = co_await checkpoint::replace_file(io, job_dir, std::string(latest_file_name),
                                                   suffix.generic_string() + "\n");
  if (!written) co_return fail(std::move(written).error().with_context(context));
  co_return success();
}

asio::awaitable<result<std::optional<std::string>>> read_latest_on(io::engine& io,
                                                                   fs::path job_dir) {
  const fs::path file = job_dir / std::string(latest_file_name);
  auto text = co_await checkpoint::read_small_file(io, AT_FDCWD, file.string(), 4096);
  if (!text) {
    if (text.error() == errc::not_found) co_return std::optional<std::string>();
    co_return fail(std::move(text).error());
  }
  std::string s = std::move(text).value();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.pop_back();
  const std::string context = "LATEST in " + job_dir.string();
  if (s.empty()) co_return fail(errc::corrupt, context + " is empty");
  auto relative = check_relative(fs::path(s), "checkpoint suffix");
  if (!relative) co_return fail(std::move(relative).error().with_context(context));
  auto committed = co_await check_is_committed(io, job_dir, s);
  if (!committed) {
    co_return fail(std::move(committed).error().with_context(context + " names \"" + s + "\""));
  }
  co_return std::optional<std::string>(std::move(s));
}

// Awaits `op` (one of the bodies above, given the engine) on `rt`'s engine from any executor.
template <class Op>
auto awaited(std::shared_ptr<runtime> rt, Op op) -> decltype(op(std::declval<io::engine&>())) {
  rt = runtime_or_global(rt);
  co_return co_await detail::run_on(rt->executor(), op(rt->io()));
}

}  // namespace

result<void> check_relative(const fs::path& rel, std::string_view what) {
  const std::string text = rel.string();
  const std::string quoted = std::string(what) + " \"" + text + "\"";
  if (text.empty()) return fail(errc::path_escape, quoted + " is empty");
  if (text.find('\0') != std::string::npos) {
    return fail(errc::invalid_argument, quoted + " contains a NUL byte");
  }
  if (rel.has_root_path()) return fail(errc::path_escape, quoted + " is absolute");
  std::string last;
  for (const auto& part : rel) {
    const std::string p = part.string();
    if (p == "..") return fail(errc::path_escape, quoted + " has a \"..\" component");
    if (p.empty() || p == ".") continue;
    last = p;
  }
  if (last.empty()) return fail(errc::path_escape, quoted + " names no directory below its base");
  if (last[0] == '.') {
    return fail(errc::invalid_argument,
                quoted + ": names starting with '.' are reserved for ckpt's temporary files");
  }
  return success();
}

result<fs::path> resolve(const fs::path& base, const fs::path& rel, std::string_view what) {
  if (base.empty()) return fail(errc::invalid_argument, "checkpoints_dir is empty");
  CKPT_TRY(check_relative(rel, what));
  std::error_code ec;
  fs::path out = fs::absolute(base, ec);
  if (ec) return fail(error(ec, "make " + base.string() + " absolute"));
  out = out.lexically_normal();
  for (const auto& part : rel) {
    const std::string p = part.string();
    if (p.empty() || p == ".") continue;
    out /= p;
  }
  // Drop a trailing separator the normalised base may carry ("/a/b/" -> "/a/b").
  return out.lexically_normal();
}

bool natural_less(std::string_view a, std::string_view b) noexcept {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      std::size_t ia = i, jb = j;
      while (ia < a.size() && a[ia] == '0')
        ++ia;
      while (jb < b.size() && b[jb] == '0')
        ++jb;
      std::size_t ea = ia, eb = jb;
      while (ea < a.size() && is_digit(a[ea]))
        ++ea;
      while (eb < b.size() && is_digit(b[eb]))
        ++eb;
      // Significant digits: more digits is larger, else compare them in order.
      if (ea - ia != eb - jb) return ea - ia < eb - jb;
      const int c = a.substr(ia, ea - ia).compare(b.substr(jb, eb - jb));
      if (c != 0) return c < 0;
      // Same value: fewer leading zeros first.
      if (ia - i != jb - j) return ia - i < jb - j;
      i = ea;
      j = eb;
      continue;
    }
    const auto ca = static_cast<unsigned char>(a[i]), cb = static_cast<unsigned char>(b[j]);
    if (ca != cb) return ca < cb;
    ++i;
    ++j;
  }
  return (a.size() - i) < (b.size() - j);
}

result<std::vector<std::string>> list_committed(const fs::path& job_dir,
                                                const std::shared_ptr<runtime>& rt) {
  return blocking(rt, [&](io::engine& io) { return list_on(io, job_dir); });
}

result<void> write_latest(const fs::path& job_dir, const fs::path& suffix,
                          const std::shared_ptr<runtime>& rt) {
  return blocking(rt, [&](io::engine& io) { return write_latest_on(io, job_dir, suffix); });
}

result<std::optional<std::string>> read_latest(const fs::path& job_dir,
                                               const std::shared_ptr<runtime>& rt) {
  return blocking(rt, [&](io::engine& io) { return read_latest_on(io, job_dir); });
}

asio::awaitable<result<std::vector<std::string>>> async_list_committed(
    std::filesystem::path job_dir, std::shared_ptr<runtime> rt) {
  return awaited(std::move(rt),
                 [job_dir = std::move(job_dir)](io::engine& io) { return list_on(io, job_dir); });
}

asio::awaitable<result<void>> async_write_latest(std::filesystem::path job_dir,
                                                 std::filesystem::path suffix,
                                                 std::shared_ptr<runtime> rt) {
  return awaited(std::move(rt),
                 [job_dir = std::move(job_dir), suffix = std::move(suffix)](io::engine& io) {
                   return write_latest_on(io, job_dir, suffix);
                 });
}

asio::awaitable<result<std::optional<std::string>>> async_read_latest(std::filesystem::path job_dir,
                                                                      std::shared_ptr<runtime> rt) {
  return awaited(std::move(rt), [job_dir = std::move(job_dir)](io::engine& io) {
    return read_latest_on(io, job_dir);
  });
}

result<retention_report> apply_retention(const fs::path& job_dir, const retention_options& options,
                                         const std::shared_ptr<runtime>& rt) {
  const std::string context = "retention in " + job_dir.string();
  retention_report report;
  CKPT_TRY_CTX(auto all, list_committed(job_dir, rt), context);
  if (options.keep_last == 0 && options.keep_every == 0) {
    report.kept = std::move(all);
    return report;
  }
  // LATEST must be readable: without knowing its target nothing may be deleted.
  CKPT_TRY_CTX(auto latest, read_latest(job_dir, rt),
               context + ": LATEST unreadable, nothing deleted");
  std::string latest_top;
  if (latest) latest_top = fs::path(*latest).begin()->string();

  std::vector<std::string> victims;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const std::string& name = all[i];
    bool keep = name == latest_top;
    if (options.keep_last > 0 && all.size() - i <= options.keep_last) keep = true;
    if (options.keep_every > 0) {
      auto n = last_number(name);
      if (!n || *n % options.keep_every == 0) keep = true;
    }
    (keep ? report.kept : victims).push_back(name);
  }
  if (victims.empty()) return report;

  // Rename every victim into the trash, make the renames durable, then delete.
  auto r = blocking(rt, [&](io::engine& io) { return checkpoint::retire(io, job_dir, victims); });
  if (!r) return fail(std::move(r).error().with_context(context));
  for (std::size_t i = 0; i < victims.size(); ++i)
    (r.value().renamed[i] ? report.removed : report.kept).push_back(victims[i]);
  std::sort(report.kept.begin(), report.kept.end(),
            [](const std::string& x, const std::string& y) { return natural_less(x, y); });
  if (r.value().first_error) {
    return fail(std::move(*r.value().first_error).with_context(context));
  }
  return report;
}

result<cleanup_report> cleanup_stale(const fs::path& job_dir, const std::shared_ptr<runtime>& rt) {
  cleanup_report report;
  std::error_code ec;
  fs::directory_iterator it(job_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return report;
    return fail(error(ec, "list " + job_dir.string()));
  }
  const std::string own_pid = std::to_string(::getpid());
  std::vector<std::string> victims;
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    std::error_code sec;
    const auto st = entry.symlink_status(sec);  // never follow a link
    if (sec) continue;
    if (fs::is_regular_file(st)) {
      // (A `.<name>.tmp-*` file: a differential save's hard-link probe left by a crash.)
      const auto owner = transient_owner(name, "tmp");
      if (name == std::string(latest_file_name) + ".tmp" ||
          name == std::string(done_file_name) + ".tmp" || (owner && *owner != own_pid)) {
        victims.push_back(name);
      }
      continue;
    }
    if (!fs::is_directory(st)) continue;
    auto owner = transient_owner(name, "tmp");
    if (!owner) owner = transient_owner(name, "trash");
    if (!owner) continue;
    if (*owner == own_pid) continue;  // possibly a save or retention of ours in flight
    victims.push_back(name);
  }
  std::sort(victims.begin(), victims.end());
  for (const auto& v : victims) {
    CKPT_TRYV_CTX(
        blocking(rt, [&](io::engine& io) { return checkpoint::remove_tree(io, job_dir / v); }),
        "clean up " + job_dir.string());
    report.removed.push_back(v);
  }
  if (!victims.empty()) {
    CKPT_TRY(
        blocking(rt, [&](io::engine& io) { return checkpoint::fsync_directory(io, job_dir); }));
  }
  return report;
}

bool is_done(const fs::path& job_dir) noexcept {
  std::error_code ec;
  return fs::is_regular_file(job_dir / std::string(done_file_name), ec);
}

result<void> mark_done(const fs::path& job_dir, std::string_view content,
                       const std::shared_ptr<runtime>& rt) {
  const std::string context = "mark " + job_dir.string() + " done";
  CKPT_TRYV_CTX(
      blocking(rt, [&](io::engine& io) { return checkpoint::make_directories(io, job_dir); }),
      context);
  CKPT_TRYV_CTX(blocking(rt,
                         [&](io::engine& io) {
                           return checkpoint::replace_file(io, job_dir, std::string(done_file_name),
                                                           std::string(content));
                         }),
                context);
  return success();
}

}  // namespace ckpt::store
