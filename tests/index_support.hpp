// A checkpoint's index.json read and parsed by the format's own parser (tests that look at
// what a save recorded). Needs the src/ headers (ckpt-tests has them).
#pragma once

#include "format/index.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace ckpt::test {

inline ckpt::format::index read_index(const std::filesystem::path& checkpoint) {
  std::ifstream in(checkpoint / std::string(ckpt::format::index_file), std::ios::binary);
  std::string text{std::istreambuf_iterator<char>(in), {}};
  text.reserve(text.size() + ckpt::format::parse_padding);
  return ckpt::format::parse_index(text).value();
}

}  // namespace ckpt::test
