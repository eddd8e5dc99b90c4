// libFuzzer target: the chunk decoder. Input: [codec byte][element size byte][raw size: 2 bytes]
// then the stored bytes. Decoding must fail cleanly or produce exactly the expected size.
#include "format/codec.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const auto c = static_cast<ckpt::format::codec>(data[0] % 3);
  const std::size_t es = std::size_t{1} << (data[1] % 4);  // 1, 2, 4, 8
  const std::size_t raw =
      (static_cast<std::size_t>(data[2]) | (static_cast<std::size_t>(data[3]) << 8)) * es;
  std::vector<std::byte> out(raw);
  std::span<const std::byte> stored(reinterpret_cast<const std::byte*>(data + 4), size - 4);
  (void)ckpt::format::decode_chunk(c, stored, es, out);
  // Round trip: whatever we encode decodes to the same bytes.
  if (stored.size() % es != 0) return 0;
  std::vector<std::byte> enc(ckpt::format::encode_bound(stored.size()));
  const std::size_t n = ckpt::format::encode_chunk(c, stored, es, enc, 0.0);
  if (n > 0) {
    std::vector<std::byte> back(stored.size());
    auto r = ckpt::format::decode_chunk(c, std::span<const std::byte>(enc.data(), n), es, back);
    if (!r || back != std::vector<std::byte>(stored.begin(), stored.end())) __builtin_trap();
  }
  return 0;
}
