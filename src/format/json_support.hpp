// What the JSON codecs of index.json and COMMIT share: number/version writing and error
// messages naming the file. Both are read with simdjson On Demand (index_parser.cpp says why
// not DOM); the sharded files with simdjson's DOM (sharded.cpp). Internal header.
#pragma once

#include "format/index.hpp"

#include <simdjson.h>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace ckpt::format::json {

inline void append_u64(std::string& out, std::uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

/// `"version":[major,minor]`
void append_version(std::string& out);

/// Shows untrusted text in a message: at most 64 bytes, control bytes as '?'.
std::string shown(std::string_view s);

/// Builds the errors of one file's parser: "index.json: <message>".
class error_sink {
 public:
  explicit error_sink(std::string_view file) : file_(file) {}

  error make(errc e, std::string_view msg) const;
  error corrupt(std::string_view msg) const { return make(errc::corrupt, msg); }
  error limit(std::string_view msg) const { return make(errc::limit_exceeded, msg); }
  /// A simdjson failure while reading `where`, which asked for `expected` (a type mismatch or
  /// an integer out of range is "where: expected <expected>").
  error json(simdjson::error_code e, std::string_view where, std::string_view expected) const;

 private:
  std::string_view file_;
};

constexpr std::string_view non_negative_integer = "a non-negative integer";

struct version_t {
  std::uint64_t major = 0;
  std::uint64_t minor = 0;
};

}  // namespace ckpt::format::json
