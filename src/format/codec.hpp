// Chunk codecs: how one chunk of a leaf's bytes is stored, and its checksum. Internal header.
#pragma once

#include "format/runs.hpp"

#include <ckpt/error.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::format {

/// How a chunk's bytes are stored. Recorded per chunk in the index by name.
enum class codec : std::uint8_t {
  raw,          ///< "raw": the bytes as they are
  lz4,          ///< "lz4": one LZ4 block (LZ4_compress_default), no frame
  shuffle_lz4,  ///< "shuffle-lz4": bytes transposed by element size, then one LZ4 block
};

/// The largest raw chunk the LZ4 codecs handle (LZ4_MAX_INPUT_SIZE); larger chunks are stored raw.
inline constexpr std::size_t max_lz4_chunk = 0x7E000000;

std::string_view codec_name(codec c) noexcept;
result<codec> parse_codec(std::string_view name);
/// parse_codec without the error: false when `name` is no codec name.
bool try_parse_codec(std::string_view name, codec& c) noexcept;

/// XXH3-64 of `bytes` (the checksum of a chunk's stored bytes, and of the index).
std::uint64_t checksum(std::span<const std::byte> bytes) noexcept;
/// 16 lowercase hex digits, and back (exactly 16 hex digits or an error).
std::string checksum_hex(std::uint64_t h);
result<std::uint64_t> parse_checksum_hex(std::string_view s);
/// parse_checksum_hex without the error: false when `s` is not 16 hex digits.
bool try_parse_checksum_hex(std::string_view s, std::uint64_t& h) noexcept;

/// The identity of a chunk's raw bytes: XXH3-128 (a differential save treats two chunks whose
/// hashes are equal as equal; docs/FORMAT.md "Differential checkpoints").
struct raw_hash {
  std::uint64_t lo = 0, hi = 0;
  friend bool operator==(const raw_hash&, const raw_hash&) = default;
};
raw_hash hash128(std::span<const std::byte> bytes) noexcept;
/// One pass over a chunk's raw bytes in cache-sized blocks: its fill runs (find_runs, when
/// `runs`), its hash128 (when `hash`) and, when it has no runs, its checksum (a raw chunk's).
struct chunk_scan {
  std::vector<fill_run> runs;
  raw_hash hash;
  std::uint64_t xxh3 = 0;
  bool xxh3_known = false;  ///< false once a run was found (the checksum was not completed)
};
chunk_scan scan_chunk(std::span<const std::byte> raw, std::size_t element_size, bool runs,
                      bool hash);
/// 32 lowercase hex digits (hi then lo), and back (false unless exactly 32 hex digits).
std::string hash128_hex(const raw_hash& h);
bool try_parse_hash128_hex(std::string_view s, raw_hash& h) noexcept;

struct codec_policy {
  /// Try compression at all (false: every chunk raw).
  bool compress = true;
  /// Byte-shuffle by element size for floating dtypes of size > 1 before LZ4.
  bool shuffle = true;
  /// Compress only when raw/stored >= this on a sample (and then on the whole chunk).
  double min_ratio = 1.5;
};

/// Chooses the codec for `src` cheaply by compressing a few small samples (a handful of
/// 16 KiB windows spread over the chunk; the whole chunk when it is small). Never returns a
/// codec whose sample ratio is below `policy.min_ratio`.
codec choose_codec(std::span<const std::byte> src, std::size_t element_size, bool floating,
                   const codec_policy& policy);

/// Capacity `dst` needs for encode_chunk with any codec.
std::size_t encode_bound(std::size_t raw_size) noexcept;

/// Encodes `src` with `c` into `dst` (dst.size() >= encode_bound(src.size())) and returns the
/// stored size. For lz4 / shuffle_lz4, returns 0 when the result would not be smaller than
/// src.size() / min_ratio (the caller then stores it raw). Thread-safe; uses thread-local
/// scratch space for the shuffle.
std::size_t encode_chunk(codec c, std::span<const std::byte> src, std::size_t element_size,
                         std::span<std::byte> dst, double min_ratio);

/// Decodes a stored chunk into `dst`, whose size is the exact expected raw size. A stored chunk
/// that is malformed or decodes to any other size is `errc::corrupt` (never UB, never a
/// partial silent result). Thread-safe.
result<void> decode_chunk(codec c, std::span<const std::byte> stored, std::size_t element_size,
                          std::span<std::byte> dst);

/// decode_chunk of a chunk with fill runs (1.2): the stored bytes decode to the rest, which is
/// then spread over `dst` around the runs, and the runs filled. No runs: decode_chunk.
result<void> decode_chunk(codec c, std::span<const std::byte> stored, std::size_t element_size,
                          std::span<const fill_run> runs, std::span<std::byte> dst);

/// Byte shuffle: element i's byte b goes to b * n + i (n = elements). `dst.size() ==
/// src.size()`, a multiple of element_size.
void shuffle_bytes(std::span<const std::byte> src, std::size_t element_size,
                   std::span<std::byte> dst) noexcept;
void unshuffle_bytes(std::span<const std::byte> src, std::size_t element_size,
                     std::span<std::byte> dst) noexcept;

}  // namespace ckpt::format
