// Shared helpers for ckpt's tests: temporary directories and deterministic data.
#pragma once

#include <ckpt/array.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ckpt::test {

/// A fresh directory removed (recursively) on destruction. `base` defaults to the system
/// temporary directory; pass "/dev/shm" for tmpfs or a disk path for a real file system.
class temp_dir {
 public:
  explicit temp_dir(const std::filesystem::path& base = std::filesystem::temp_directory_path());
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// The directories the file-system-dependent tests run on: tmpfs and the real disk.
std::vector<std::filesystem::path> test_roots();

/// Deterministic pseudo-random bytes (splitmix64 of `seed`).
std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed);

/// An owned 1-d array of `n` elements of `t` holding random_bytes(seed).
ckpt::array random_array(ckpt::dtype t, std::int64_t n, std::uint64_t seed);

}  // namespace ckpt::test
