// libFuzzer target: the index.json and COMMIT parsers/validators (simdjson On Demand) on
// arbitrary bytes.
#include "format/index.hpp"

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
  return 0;
}
