#include "checkpoint/files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace ckpt::checkpoint {

result<std::string> read_small_file(const std::filesystem::path& file, std::size_t max_bytes) {
  int fd;
  do {
    fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail(system_error(errno, "open " + file.string()));
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return fail(system_error(err, "read " + file.string()));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return fail(errc::limit_exceeded,
                  file.string() + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  ::close(fd);
  return out;
}

}  // namespace ckpt::checkpoint
