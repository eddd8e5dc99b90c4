#include "support.hpp"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <system_error>

namespace ckpt::test {

temp_dir::temp_dir(const std::filesystem::path& base) {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto p = base / ("ckpt-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
                     "-" + std::to_string(rd() % 100000));
    std::error_code ec;
    if (std::filesystem::create_directories(p, ec) && !ec) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("temp_dir: cannot create a directory under " + base.string());
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<std::filesystem::path> test_roots() {
  std::vector<std::filesystem::path> roots;
  if (std::filesystem::is_directory("/dev/shm")) roots.emplace_back("/dev/shm");
  // The real disk: the build tree lives on it (the system temp dir may itself be tmpfs).
  roots.push_back(std::filesystem::current_path());
  return roots;
}

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed) {
  std::vector<std::uint8_t> out(n);
  std::uint64_t x = seed;
  for (std::size_t i = 0; i < n; i += 8) {
    x += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (std::size_t j = 0; j < 8 && i + j < n; ++j)
      out[i + j] = static_cast<std::uint8_t>(z >> (8 * j));
  }
  return out;
}

ckpt::array random_array(ckpt::dtype t, std::int64_t n, std::uint64_t seed) {
  auto a = ckpt::array::zeros(t, {n}).value();
  auto bytes = random_bytes(a.num_bytes(), seed);
  if (!bytes.empty()) std::memcpy(a.mutable_bytes().data(), bytes.data(), bytes.size());
  return a;
}

}  // namespace ckpt::test
