// libFuzzer target: the index.json and COMMIT parsers/validators on arbitrary bytes, and the
// index's JSON reader checked against simdjson on what is JSON.
#include "format/index.hpp"
#include "format/json_reader.hpp"

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  text.append(ckpt::format::parse_padding, ' ');
  const std::string_view json(text.data(), size);
  auto ix = ckpt::format::parse_index(json);
  if (ix) {
    // A valid index re-encodes and parses again to the same file and leaf counts.
    std::string again = ckpt::format::encode_index(ix.value());
    const std::size_t n = again.size();
    again.append(ckpt::format::parse_padding, ' ');
    auto ix2 = ckpt::format::parse_index(std::string_view(again.data(), n));
    if (!ix2 || ix2.value().leaves.size() != ix.value().leaves.size() ||
        ix2.value().files.size() != ix.value().files.size())
      __builtin_trap();
  }
  (void)ckpt::format::parse_commit(json);

  // Differential: on valid UTF-8, the reader accepts a text exactly when simdjson's DOM parser
  // does (nesting within both parsers' caps; simdjson also refuses numbers out of a double's
  // range, which are JSON).
  if (ckpt::format::is_valid_utf8(json)) {
    ckpt::format::json::reader r(json.data(), json.size());
    const bool ours = r.skip(512) && r.at_end();
    const bool deep = !ours && r.last_fault() == ckpt::format::json::fault::too_deep;
    static simdjson::dom::parser parser;
    simdjson::dom::element e;
    const auto err = parser.parse(json.data(), json.size(), false).get(e);
    if (!deep && err != simdjson::DEPTH_ERROR && err != simdjson::NUMBER_ERROR &&
        ours != (err == simdjson::SUCCESS))
      __builtin_trap();
  }
  return 0;
}
