// What the JSON codecs of index.json and COMMIT share: number/version writing, error messages
// naming the file, and for COMMIT (small, capped at 1 MiB) simdjson's DOM with its version
// check. index.json is read with simdjson On Demand (index_parser.cpp says why); the sharded
// files with the DOM too (sharded.cpp). Internal header.
#pragma once

#include "format/index.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace ckpt::format::json {

namespace dom = simdjson::dom;

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

/// Reads "version" of the root object: [major, minor], a major other than ours being
/// errc::unsupported_version.
result<version_t> check_version(const error_sink& sink, dom::object root);

/// The DOM parser's nesting cap (COMMIT needs 3 levels; a newer version's keys get room).
inline constexpr std::size_t max_json_depth = 256;

/// Parses `json` (followed by parse_padding readable bytes) into a DOM (nesting up to
/// max_json_depth), then calls f(root element). A thread's parser is reused for documents below
/// 16 MiB (its buffers grow to the largest seen); a larger one gets a parser of its own, so the
/// memory goes back. A text simdjson refuses is errc::corrupt (limit_exceeded when too deep),
/// the message naming, where it can be found, the value that is malformed.
template <class F>
auto with_dom(const error_sink& sink, std::string_view json, F&& f)
    -> decltype(f(std::declval<dom::element>()));

/// Where a text the DOM parser refused goes wrong, found by walking it with simdjson On Demand:
/// "at <path> (byte N): " or empty when the walk finds nothing. (Only on that error path.)
std::string locate_json_error(std::string_view json);

// ---- with_dom -----------------------------------------------------------------------------------

error parse_failure(const error_sink& sink, simdjson::error_code e, std::string_view json);

template <class F>
auto with_dom(const error_sink& sink, std::string_view json, F&& f)
    -> decltype(f(std::declval<dom::element>())) {
  constexpr std::size_t reuse_below = 16u << 20;
  static_assert(parse_padding >= simdjson::SIMDJSON_PADDING);
  thread_local dom::parser cached;
  dom::parser local;
  dom::parser& p = json.size() < reuse_below ? cached : local;
  if (p.max_depth() != max_json_depth || p.capacity() < json.size()) {
    if (auto e = p.allocate(std::max(json.size(), p.capacity()), max_json_depth)) {
      return sink.limit(std::string("cannot allocate the JSON parser: ") +
                        simdjson::error_message(e));
    }
  }
  dom::element root;
  if (auto e = p.parse(json.data(), json.size(), false).get(root)) {
    return parse_failure(sink, e, json);
  }
  return f(root);
}

}  // namespace ckpt::format::json
