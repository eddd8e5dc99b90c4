#include "store_io.hpp"

#include "testing.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <vector>

namespace ckpt::detail {

namespace fs = std::filesystem;

namespace {

// Reports a successful mutation to the test observer (test builds only; see testing.hpp).
void observe(testing::fs_event::kind_t kind, const fs::path& path, const fs::path& path2 = {},
             int flags = 0, std::uint64_t offset = 0, std::string_view data = {}) {
  if (!testing::observed()) return;
  testing::fs_event e;
  e.kind = kind;
  e.path = path.string();
  e.path2 = path2.string();
  e.flags = flags;
  e.offset = offset;
  e.data = data;
  testing::notify(e);
}

// Closes a descriptor on scope exit.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

int open_retry(const char* path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

}  // namespace

result<void> fsync_directory(const fs::path& dir) {
  fd_guard g{open_retry(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (g.fd < 0) return fail(system_error(errno, "open directory " + dir.string()));
  if (::fsync(g.fd) != 0) return fail(system_error(errno, "fsync directory " + dir.string()));
  observe(testing::fs_event::fsync, dir);
  return success();
}

result<void> create_directories_durable(const fs::path& dir) {
  std::vector<fs::path> missing;
  for (fs::path p = dir; !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return fail(system_error(ENOTDIR, p.string() + " is not a directory"));
      }
      break;
    }
    if (errno != ENOENT) return fail(system_error(errno, "stat " + p.string()));
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST) {
      return fail(system_error(errno, "create directory " + it->string()));
    }
    observe(testing::fs_event::mkdir, *it);
    CKPT_TRY(fsync_directory(it->parent_path().empty() ? fs::path(".") : it->parent_path()));
  }
  return success();
}

result<void> replace_file_durable(const fs::path& dir, std::string_view name,
                                  std::string_view content) {
  const fs::path tmp = dir / (std::string(name) + ".tmp");
  const fs::path target = dir / std::string(name);
  {
    const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
    fd_guard g{open_retry(tmp.c_str(), flags, 0644)};
    if (g.fd < 0) return fail(system_error(errno, "create " + tmp.string()));
    observe(testing::fs_event::open, tmp, {}, flags);
    std::size_t done = 0;
    while (done < content.size()) {
      ssize_t n = ::write(g.fd, content.data() + done, content.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(system_error(errno, "write " + tmp.string()));
      }
      observe(testing::fs_event::write, tmp, {}, 0, done,
              content.substr(done, static_cast<std::size_t>(n)));
      done += static_cast<std::size_t>(n);
    }
    // Never retry a failed fsync (the kernel may have dropped the dirty pages).
    const bool is_latest = name == "LATEST";
    if (!(is_latest && testing::planted("latest_before_data"))) {
      if (::fsync(g.fd) != 0) return fail(system_error(errno, "fsync " + tmp.string()));
      observe(testing::fs_event::fsync, tmp);
    }
    if (is_latest) testing::kill_point("after_latest_tmp");
    int fd = g.fd;
    g.fd = -1;
    if (::close(fd) != 0) return fail(system_error(errno, "close " + tmp.string()));
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    return fail(system_error(errno, "rename " + tmp.string() + " to " + target.string()));
  }
  observe(testing::fs_event::rename, tmp, target);
  return fsync_directory(dir);
}

result<std::string> read_small_file(const fs::path& file, std::size_t max_bytes) {
  fd_guard g{open_retry(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
  if (g.fd < 0) return fail(system_error(errno, "open " + file.string()));
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(g.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(system_error(errno, "read " + file.string()));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      return fail(errc::limit_exceeded,
                  file.string() + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  return out;
}

result<void> rename_noreplace(const fs::path& dir, std::string_view from, std::string_view to) {
  fd_guard g{open_retry(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (g.fd < 0) return fail(system_error(errno, "open directory " + dir.string()));
  const std::string f(from), t(to);
  if (::renameat2(g.fd, f.c_str(), g.fd, t.c_str(), RENAME_NOREPLACE) != 0) {
    return fail(system_error(errno, "rename " + (dir / f).string() + " to " + t));
  }
  observe(testing::fs_event::rename, dir / f, dir / t);
  return success();
}

result<void> remove_tree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return fail(error(ec, "remove " + path.string()));
  }
  observe(testing::fs_event::remove_tree, path);
  return success();
}

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
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(x));
  return std::to_string(::getpid()) + "-" + std::string(hex, 8);
}

}  // namespace ckpt::detail
