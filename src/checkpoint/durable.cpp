#include "checkpoint/durable.hpp"

#include "checkpoint/files.hpp"

#include "io/async.hpp"
#include "testing/testing.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>

namespace ckpt::checkpoint {

namespace fs = std::filesystem;

std::string unique_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t x =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      ((counter.fetch_add(1) + 1) * 0x9e3779b97f4a7c15ULL);
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08llx", static_cast<unsigned long long>(x >> 32));
  return std::to_string(::getpid()) + "-" + hex;
}

std::string temp_name(std::string_view name, std::string_view suffix) {
  return "." + std::string(name) + ".tmp-" + std::string(suffix);
}

std::string trash_name(std::string_view name, std::string_view suffix) {
  return "." + std::string(name) + ".trash-" + std::string(suffix);
}

namespace {

asio::awaitable<result<io::file>> open_directory(io::engine& io, fs::path dir) {
  auto d = co_await io.open(AT_FDCWD, dir.string(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!d) co_return fail(std::move(d).error().with_context("open directory " + dir.string()));
  co_return std::move(d).value();
}

// Writes `content` into the open `f`, fsyncs (unless `sync` is false: planted bugs) and closes
// it; the close runs whatever happened before it.
asio::awaitable<result<void>> write_sync_close(io::engine& io, io::file f, std::string label,
                                               const std::string& content, bool sync) {
  auto w = co_await io.write(f, std::as_bytes(std::span(content)), 0);
  result<void> s = success();
  if (w && sync) s = co_await io.fsync(f);  // (no co_await inside ?: : GCC 12 miscompiles it)
  auto c = co_await io.close(f);
  if (!w) co_return fail(std::move(w).error().with_context("write " + label));
  if (!s) co_return fail(std::move(s).error().with_context("fsync " + label));
  if (!c) co_return fail(std::move(c).error().with_context("close " + label));
  co_return success();
}

}  // namespace

asio::awaitable<result<void>> fsync_directory(io::engine& io, fs::path dir) {
  CKPT_CO_TRY(io::file d, co_await open_directory(io, dir));
  auto s = co_await io.fsync(d);
  (void)co_await io.close(d);
  if (!s) co_return fail(std::move(s).error().with_context("fsync directory " + dir.string()));
  co_return success();
}

asio::awaitable<result<void>> make_directories(io::engine& io, fs::path dir) {
  std::vector<fs::path> missing;
  for (auto p = dir; !p.empty(); p = p.parent_path()) {
    auto st = co_await io.statx(AT_FDCWD, p.string());
    if (st) {
      if (!S_ISDIR(st.value().stx_mode)) {
        co_return fail(system_error(ENOTDIR, p.string() + " is not a directory"));
      }
      break;
    }
    if (st.error() != std::errc::no_such_file_or_directory) {
      co_return fail(std::move(st).error().with_context("stat " + p.string()));
    }
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    auto made = co_await io.mkdir(AT_FDCWD, it->string(), 0755);
    if (!made && made.error() != std::errc::file_exists) {
      co_return fail(std::move(made).error().with_context("create directory " + it->string()));
    }
    const fs::path up = it->parent_path().empty() ? fs::path(".") : it->parent_path();
    CKPT_CO_TRY(co_await fsync_directory(io, up));
  }
  co_return success();
}

asio::awaitable<result<void>> write_new_file(io::engine& io, io::file dir, std::string name,
                                             std::string content) {
  const std::string label = dir.name.empty() ? name : dir.name + "/" + name;
  auto f =
      co_await io.open(dir.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (!f) co_return fail(std::move(f).error().with_context("create " + label));
  co_return co_await write_sync_close(io, std::move(f).value(), label, content, true);
}

namespace {

// replace_file inside the open directory `d`.
asio::awaitable<result<void>> replace_in(io::engine& io, io::file d, fs::path dir, std::string name,
                                         std::string content) {
  const std::string tmp = name + ".tmp";
  const std::string label = (dir / tmp).string();
  auto f = co_await io.open(d.fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (!f) co_return fail(std::move(f).error().with_context("create " + label));
  const bool is_latest = name == "LATEST";
  const bool sync = !(is_latest && testing::planted("latest_before_data"));
  CKPT_CO_TRY(co_await write_sync_close(io, std::move(f).value(), label, content, sync));
  if (is_latest) testing::kill_point("after_latest_tmp");
  auto r = co_await io.rename(d.fd, tmp, d.fd, name);
  if (!r) co_return fail(std::move(r).error().with_context("rename " + label + " to " + name));
  auto s = co_await io.fsync(d);
  if (!s) co_return fail(std::move(s).error().with_context("fsync directory " + dir.string()));
  co_return success();
}

}  // namespace

asio::awaitable<result<void>> replace_file(io::engine& io, fs::path dir, std::string name,
                                           std::string content) {
  CKPT_CO_TRY(io::file d, co_await open_directory(io, dir));
  auto op = replace_in(io, d, dir, std::move(name), std::move(content));
  auto r = co_await std::move(op);
  (void)co_await io.close(d);
  co_return r;
}

asio::awaitable<result<void>> remove_tree(io::engine& io, fs::path path) {
  std::error_code ec;
  const auto st = fs::symlink_status(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) co_return success();
    co_return fail(error(ec, "remove " + path.string()));
  }
  if (fs::is_directory(st)) {
    std::vector<fs::path> entries;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
      entries.push_back(it->path());
    if (ec && ec != std::errc::no_such_file_or_directory) {
      co_return fail(error(ec, "list " + path.string()));
    }
    // Everything that can go goes; the first error is reported.
    std::optional<error> first;
    for (auto& e : entries) {
      auto op = remove_tree(io, std::move(e));
      auto r = co_await std::move(op);
      if (!r && !first) first = std::move(r).error();
    }
    if (first) co_return fail(std::move(*first));
  }
  auto u = co_await io.unlink(AT_FDCWD, path.string(), fs::is_directory(st) ? AT_REMOVEDIR : 0);
  if (!u && u.error() != std::errc::no_such_file_or_directory) {
    co_return fail(std::move(u).error().with_context("remove " + path.string()));
  }
  co_return success();
}

asio::awaitable<result<std::string>> rename_to_trash(io::engine& io, io::file dir,
                                                     std::string entry, std::string name) {
  std::string trash = trash_name(name, unique_suffix());
  const std::string& from = entry.empty() ? name : entry;
  auto r = co_await io.rename(dir.fd, from, dir.fd, trash, RENAME_NOREPLACE);
  if (!r) {
    co_return fail(
        std::move(r).error().with_context("rename " + dir.name + "/" + from + " to " + trash));
  }
  co_return trash;
}

namespace {

// Step 1: every data file fsynced (after all its writes completed: the caller's promise), then
// closed, whatever happened.
asio::awaitable<result<void>> sync_data_files(io::engine& io, std::vector<io::file> files,
                                              std::string kill_prefix) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<asio::awaitable<result<void>>> ops;
  if (!testing::planted("fsync_before_write")) {  // (that plant fsyncs before the writes)
    for (auto& f : files)
      ops.push_back(io.fsync(f));
  }
  auto synced = co_await detail::when_all(ex, std::move(ops));
  testing::kill_point(kill_prefix + "after_data_fsync");
  result<void> closed = success();
  for (auto& f : files) {
    auto c = co_await io.close(f);
    if (!c && closed) closed = fail(std::move(c).error().with_context("close " + f.name));
  }
  if (!synced) co_return fail(std::move(synced).error().with_context("fsync data files"));
  co_return closed;
}

// The writer never commits what a reader refuses: every small file (the marker too) within the
// readers' caps (checkpoint/files.hpp).
result<void> check_small_file_caps(const commit_request& rq) {
  auto check = [](const small_file& f) -> result<void> {
    const std::uint64_t cap = small_file_cap(f.name);
    if (f.content.size() <= cap) return success();
    return fail(errc::limit_exceeded, f.name + " would be " + std::to_string(f.content.size()) +
                                          " bytes, more than a reader's cap of " +
                                          std::to_string(cap));
  };
  for (const auto& f : rq.files) {
    CKPT_TRY(check(f));
  }
  return check(rq.marker);
}

asio::awaitable<result<commit_timing>> commit_open(io::engine& io, commit_request rq) {
  auto ex = co_await asio::this_coro::executor;
  const std::string kp = rq.kill_prefix;
  commit_timing timing;
  if (!rq.data_files.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    auto op = sync_data_files(io, std::move(rq.data_files), kp);
    CKPT_CO_TRY(co_await std::move(op));
    timing.data_fsync_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  CKPT_CO_TRY(check_small_file_caps(rq));
  // 2. Hard links to the base's data files (durable with the directory's fsync in 4.), then the
  //    small files, concurrently, each fsynced.
  const bool late_links = testing::planted("link_after_dir_fsync");  // test builds only
  auto make_links = [&]() -> asio::awaitable<result<void>> {
    for (const auto& l : rq.links) {
      CKPT_CO_TRYV_CTX(co_await io.link(l.dir.fd, l.from, rq.tmp_dir.fd, l.name),
                       "link the base's " + l.from + " as " + l.name);
    }
    co_return success();
  };
  if (!late_links) {
    CKPT_CO_TRY(co_await make_links());
  }
  {
    std::vector<asio::awaitable<result<void>>> ops;
    for (auto& f : rq.files)
      ops.push_back(write_new_file(io, rq.tmp_dir, std::move(f.name), std::move(f.content)));
    CKPT_CO_TRY(co_await detail::when_all(ex, std::move(ops)));
  }
  testing::kill_point(kp + "before_commit_marker");
  // 3. The commit marker, last.
  CKPT_CO_TRY(co_await write_new_file(io, rq.tmp_dir, std::move(rq.marker.name),
                                      std::move(rq.marker.content)));
  testing::kill_point(kp + "after_commit_marker");
  // 4. The temporary directory's entries are durable.
  const bool skip_dir_fsync = testing::planted("skip_dir_fsync");  // test builds only
  if (!skip_dir_fsync) {
    CKPT_CO_TRYV_CTX(co_await io.fsync(rq.tmp_dir), "fsync directory " + rq.tmp_name);
  }
  // 5. The atomic rename (an exchange when overwriting), then the parent's fsync.
  auto existing = co_await io.statx(rq.parent_dir.fd, rq.name, AT_SYMLINK_NOFOLLOW);
  if (existing && !rq.overwrite) {
    co_return fail(errc::already_exists,
                   (rq.parent / rq.name).string() +
                       " already exists (pass save_options::overwrite to replace it)");
  }
  const bool exchange = existing.has_value();
  const unsigned flags = exchange ? RENAME_EXCHANGE : RENAME_NOREPLACE;
  auto renamed =
      co_await io.rename(rq.parent_dir.fd, rq.tmp_name, rq.parent_dir.fd, rq.name, flags);
  if (!renamed) {
    if (!exchange && renamed.error() == std::errc::file_exists) {
      // Another save committed the same name between the check above and the rename.
      co_return fail(errc::already_exists, (rq.parent / rq.name).string() +
                                               " already exists (another save committed it "
                                               "first)");
    }
    co_return fail(
        std::move(renamed).error().with_context("rename " + rq.tmp_name + " to " + rq.name));
  }
  testing::kill_point(kp + "after_rename");
  if (late_links) {
    CKPT_CO_TRY(co_await make_links());
  }
  result<void> synced = success();
  if (!skip_dir_fsync) synced = co_await io.fsync(rq.parent_dir);
  if (!synced) {
    // Not known to be durable: undo the rename so that what is visible matches the failure we
    // report (the temporary name then holds the new files again, for the caller to remove).
    (void)co_await io.rename(rq.parent_dir.fd, rq.name, rq.parent_dir.fd, rq.tmp_name, flags);
    co_return fail(std::move(synced).error().with_context("fsync directory " + rq.parent.string()));
  }
  if (exchange) {
    // 6. The old checkpoint now sits under the temporary name: to the trash, then removed.
    //    Failures here leave only a trash (or temporary) directory that start-up cleans.
    auto trash = co_await rename_to_trash(io, rq.parent_dir, rq.tmp_name, rq.name);
    if (trash) {
      (void)co_await io.fsync(rq.parent_dir);
      (void)co_await remove_tree(io, rq.parent / trash.value());
    } else {
      (void)co_await remove_tree(io, rq.parent / rq.tmp_name);
    }
  }
  co_return timing;
}

}  // namespace

asio::awaitable<result<commit_timing>> commit(io::engine& io, commit_request rq) {
  if (rq.parent_dir.fd >= 0 && rq.tmp_dir.fd >= 0) {
    co_return co_await commit_open(io, std::move(rq));
  }
  // Open the directories here, and close them whatever happens.
  auto pd = co_await open_directory(io, rq.parent);
  auto t = co_await open_directory(io, rq.parent / rq.tmp_name);
  if (!pd || !t) {
    for (auto& f : rq.data_files)
      (void)co_await io.close(f);
    if (pd) (void)co_await io.close(pd.value());
    if (t) (void)co_await io.close(t.value());
    co_return fail(!pd ? std::move(pd).error() : std::move(t).error());
  }
  rq.parent_dir = std::move(pd).value();
  rq.tmp_dir = std::move(t).value();
  io::file p = rq.parent_dir, d = rq.tmp_dir;
  auto op = commit_open(io, std::move(rq));
  auto r = co_await std::move(op);
  (void)co_await io.close(d);
  (void)co_await io.close(p);
  co_return r;
}

asio::awaitable<result<retired>> retire(io::engine& io, fs::path dir,
                                        std::vector<std::string> names) {
  retired out;
  out.renamed.assign(names.size(), 0);
  CKPT_CO_TRY(io::file d, co_await open_directory(io, dir));
  std::vector<std::string> trash;
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto t = co_await rename_to_trash(io, d, {}, names[i]);
    if (!t) {
      if (!out.first_error) out.first_error = std::move(t).error();
      continue;
    }
    trash.push_back(std::move(t).value());
    out.renamed[i] = 1;
  }
  result<void> synced = success();
  if (!trash.empty()) synced = co_await io.fsync(d);
  (void)co_await io.close(d);
  if (!synced) co_return fail(std::move(synced).error().with_context("fsync " + dir.string()));
  for (const auto& t : trash) {
    auto r = co_await remove_tree(io, dir / t);
    if (!r && !out.first_error) out.first_error = std::move(r).error();
  }
  co_return out;
}

}  // namespace ckpt::checkpoint
