#include "format/json_support.hpp"

namespace ckpt::format::json {

void append_version(std::string& out) {
  out += "\"version\":[";
  append_u64(out, version_major);
  out += ',';
  append_u64(out, version_minor);
  out += ']';
}

std::string shown(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64)) {
    out += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

error error_sink::make(errc e, std::string_view msg) const {
  std::string m(file_);
  m += ": ";
  m += msg;
  return error(e, std::move(m));
}

error error_sink::json(simdjson::error_code e, std::string_view where,
                       std::string_view expected) const {
  if (e == simdjson::DEPTH_ERROR) return limit(std::string(where) + ": JSON nesting too deep");
  if (!expected.empty() && (e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_ERROR ||
                            e == simdjson::NUMBER_OUT_OF_RANGE)) {
    return corrupt(std::string(where) + ": expected " + std::string(expected));
  }
  return corrupt(std::string(where) + ": malformed JSON (" + simdjson::error_message(e) + ")");
}

}  // namespace ckpt::format::json
