#include "format/codec.hpp"

#include <lz4.h>
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
// libxxhash's run-time dispatch: XXH3 with AVX2 / AVX-512 where the CPU has them (1.6x the
// SSE2 build's speed from memory here, 13 against 8 GB/s per core), the same hashes.
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <memory>

namespace ckpt::format {
namespace {

/// A grow-only per-thread buffer (not value-initialised: it is always written before read).
class scratch {
 public:
  std::byte* get(std::size_t n) {
    if (n > capacity_) {
      data_ = std::make_unique_for_overwrite<std::byte[]>(n);
      capacity_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<std::byte[]> data_;
  std::size_t capacity_ = 0;
};

scratch& shuffle_scratch() {
  thread_local scratch s;
  return s;
}
scratch& sample_scratch() {
  thread_local scratch s;
  return s;
}

// The transposes are written as plain loops that the compiler vectorises. GCC 12's -O2 cost
// model ("very-cheap") declines them; the dynamic model vectorises them: measured on this
// machine (4 MiB, AVX-512 host, baseline x86-64 build) shuffle 40/20/10 GB/s and unshuffle
// 50/6/6 GB/s for element sizes 2/4/8, against 5/3.4/3.4 and 5/3.4/3 GB/s without.
#if defined(__GNUC__) && !defined(__clang__)
#define CKPT_VECTORIZE __attribute__((optimize("vect-cost-model=dynamic")))
#else
#define CKPT_VECTORIZE
#endif

// Elements per block: a block's source bytes (block * K <= 8 KiB) stay in L1 while the K
// destination streams are written sequentially.
constexpr std::size_t transpose_block = 1024;

template <std::size_t K>
CKPT_VECTORIZE void shuffle_k(const std::byte* __restrict src, std::size_t n,
                              std::byte* __restrict dst) {
  for (std::size_t i0 = 0; i0 < n; i0 += transpose_block) {
    const std::size_t m = std::min(transpose_block, n - i0);
    const std::byte* __restrict s = src + i0 * K;
    for (std::size_t b = 0; b < K; ++b) {
      std::byte* __restrict d = dst + b * n + i0;
      for (std::size_t i = 0; i < m; ++i)
        d[i] = s[i * K + b];
    }
  }
}

template <std::size_t K>
CKPT_VECTORIZE void unshuffle_k(const std::byte* __restrict src, std::size_t n,
                                std::byte* __restrict dst) {
  for (std::size_t i0 = 0; i0 < n; i0 += transpose_block) {
    const std::size_t m = std::min(transpose_block, n - i0);
    std::byte* __restrict d = dst + i0 * K;
    if constexpr (K == 2) {
      const std::byte* __restrict s = src + i0;
      for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t b = 0; b < K; ++b)
          d[i * K + b] = s[b * n + i];
      }
    } else {
      for (std::size_t b = 0; b < K; ++b) {
        const std::byte* __restrict s = src + b * n + i0;
        for (std::size_t i = 0; i < m; ++i)
          d[i * K + b] = s[i];
      }
    }
  }
}

void shuffle_generic(const std::byte* src, std::size_t n, std::size_t k, std::byte* dst) {
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t b = 0; b < k; ++b)
      dst[b * n + i] = src[i * k + b];
  }
}

void unshuffle_generic(const std::byte* src, std::size_t n, std::size_t k, std::byte* dst) {
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t b = 0; b < k; ++b)
      dst[i * k + b] = src[b * n + i];
  }
}

/// The most bytes LZ4 may be asked to compress or produce in one block.
constexpr std::size_t lz4_max = LZ4_MAX_INPUT_SIZE;
static_assert(lz4_max == max_lz4_chunk);

/// Capacity an encoded chunk must fit in to be worth storing: below raw/min_ratio and below raw.
std::size_t worthwhile_capacity(std::size_t raw, double min_ratio) {
  if (raw == 0) return 0;
  std::size_t cap = raw - 1;
  if (min_ratio > 1.0) {
    double limit = static_cast<double>(raw) / min_ratio;
    // Strictly below raw/min_ratio: the largest integer < limit.
    auto below = static_cast<std::size_t>(limit);
    if (static_cast<double>(below) >= limit && below > 0) --below;
    cap = std::min(cap, below);
  }
  return cap;
}

/// LZ4 of `src` into `dst` limited to `cap` bytes; 0 when it does not fit.
std::size_t lz4_into(const std::byte* src, std::size_t n, std::byte* dst, std::size_t cap) {
  if (n == 0 || n > lz4_max || cap == 0) return 0;
  cap = std::min<std::size_t>(cap, static_cast<std::size_t>(std::numeric_limits<int>::max()));
  int r = LZ4_compress_default(reinterpret_cast<const char*>(src), reinterpret_cast<char*>(dst),
                               static_cast<int>(n), static_cast<int>(cap));
  return r > 0 ? static_cast<std::size_t>(r) : 0;
}

/// LZ4-decodes exactly `n` bytes into dst or fails.
bool lz4_exact(std::span<const std::byte> stored, std::byte* dst, std::size_t n) {
  if (n == 0 || n > lz4_max || stored.empty() ||
      stored.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return false;
  }
  int r = LZ4_decompress_safe(reinterpret_cast<const char*>(stored.data()),
                              reinterpret_cast<char*>(dst), static_cast<int>(stored.size()),
                              static_cast<int>(n));
  return r >= 0 && static_cast<std::size_t>(r) == n;
}

std::string size_text(std::size_t n) {
  return std::to_string(n);
}

}  // namespace

std::string_view codec_name(codec c) noexcept {
  switch (c) {
    case codec::raw:
      return "raw";
    case codec::lz4:
      return "lz4";
    case codec::shuffle_lz4:
      return "shuffle-lz4";
  }
  return "?";
}

bool try_parse_codec(std::string_view name, codec& c) noexcept {
  if (name == "raw") {
    c = codec::raw;
  } else if (name == "lz4") {
    c = codec::lz4;
  } else if (name == "shuffle-lz4") {
    c = codec::shuffle_lz4;
  } else {
    return false;
  }
  return true;
}

result<codec> parse_codec(std::string_view name) {
  codec c;
  if (try_parse_codec(name, c)) return c;
  return fail(errc::corrupt, "unknown codec \"" + std::string(name.substr(0, 64)) +
                                 "\" (known: raw, lz4, shuffle-lz4)");
}

std::uint64_t checksum(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::string checksum_hex(std::uint64_t h) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i) {
    s[static_cast<std::size_t>(i)] = digits[h & 0xf];
    h >>= 4;
  }
  return s;
}

bool try_parse_checksum_hex(std::string_view s, std::uint64_t& out) noexcept {
  // 0..15 for hex digits, 0xff otherwise.
  static constexpr auto table = [] {
    std::array<std::uint8_t, 256> t{};
    for (auto& x : t)
      x = 0xff;
    for (int i = 0; i < 10; ++i)
      t[static_cast<std::size_t>('0' + i)] = static_cast<std::uint8_t>(i);
    for (int i = 0; i < 6; ++i) {
      t[static_cast<std::size_t>('a' + i)] = static_cast<std::uint8_t>(10 + i);
      t[static_cast<std::size_t>('A' + i)] = static_cast<std::uint8_t>(10 + i);
    }
    return t;
  }();
  std::uint64_t h = 0;
  unsigned bad = s.size() != 16;
  if (!bad) {
    for (char c : s) {
      const std::uint8_t v = table[static_cast<unsigned char>(c)];
      bad |= v >> 4;
      h = (h << 4) | (v & 0xf);
    }
  }
  if (bad) return false;
  out = h;
  return true;
}

raw_hash hash128(std::span<const std::byte> bytes) noexcept {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.low64, h.high64};
}

chunk_scan scan_chunk(std::span<const std::byte> raw, std::size_t es, bool runs, bool hash) {
  constexpr std::size_t block = 256u << 10;  // (a multiple of run_page)
  chunk_scan out;
  if (raw.size() <= block) {
    if (runs) find_runs(raw, es, 0, out.runs);
    if (out.runs.empty()) out.xxh3 = checksum(raw);
    out.xxh3_known = out.runs.empty();
    if (hash) out.hash = hash128(raw);
    return out;
  }
  // Each block searched for runs first, then hashed while it is in cache. The checksum is
  // only of use when the chunk has no runs: it stops at the first block that has some.
  XXH3_state_t s64, s128;
  XXH3_64bits_reset(&s64);
  if (hash) XXH3_128bits_reset(&s128);
  out.xxh3_known = true;
  for (std::size_t off = 0; off < raw.size(); off += block) {
    const auto part = raw.subspan(off, std::min(block, raw.size() - off));
    if (runs) find_runs(part, es, off, out.runs);
    out.xxh3_known = out.xxh3_known && out.runs.empty();
    if (out.xxh3_known) XXH3_64bits_update(&s64, part.data(), part.size());
    if (hash) XXH3_128bits_update(&s128, part.data(), part.size());
  }
  if (out.xxh3_known) out.xxh3 = XXH3_64bits_digest(&s64);
  if (hash) {
    const XXH128_hash_t h = XXH3_128bits_digest(&s128);
    out.hash = {h.low64, h.high64};
  }
  return out;
}

std::string hash128_hex(const raw_hash& h) {
  return checksum_hex(h.hi) + checksum_hex(h.lo);
}

bool try_parse_hash128_hex(std::string_view s, raw_hash& h) noexcept {
  return s.size() == 32 && try_parse_checksum_hex(s.substr(0, 16), h.hi) &&
         try_parse_checksum_hex(s.substr(16), h.lo);
}

result<std::uint64_t> parse_checksum_hex(std::string_view s) {
  std::uint64_t h;
  if (try_parse_checksum_hex(s, h)) return h;
  return fail(errc::corrupt,
              "bad checksum \"" + std::string(s.substr(0, 40)) + "\" (expected 16 hex digits)");
}

void shuffle_bytes(std::span<const std::byte> src, std::size_t element_size,
                   std::span<std::byte> dst) noexcept {
  const std::size_t size = std::min(src.size(), dst.size());
  const std::size_t k = element_size == 0 ? 1 : element_size;
  const std::size_t n = size / k;
  if (size == 0) return;
  switch (k) {
    case 1:
      std::memcpy(dst.data(), src.data(), size);
      return;
    case 2:
      shuffle_k<2>(src.data(), n, dst.data());
      break;
    case 4:
      shuffle_k<4>(src.data(), n, dst.data());
      break;
    case 8:
      shuffle_k<8>(src.data(), n, dst.data());
      break;
    default:
      shuffle_generic(src.data(), n, k, dst.data());
      break;
  }
  // A trailing partial element (not expected: chunks split at element boundaries) is kept as is.
  if (size > n * k) std::memcpy(dst.data() + n * k, src.data() + n * k, size - n * k);
}

void unshuffle_bytes(std::span<const std::byte> src, std::size_t element_size,
                     std::span<std::byte> dst) noexcept {
  const std::size_t size = std::min(src.size(), dst.size());
  const std::size_t k = element_size == 0 ? 1 : element_size;
  const std::size_t n = size / k;
  if (size == 0) return;
  switch (k) {
    case 1:
      std::memcpy(dst.data(), src.data(), size);
      return;
    case 2:
      unshuffle_k<2>(src.data(), n, dst.data());
      break;
    case 4:
      unshuffle_k<4>(src.data(), n, dst.data());
      break;
    case 8:
      unshuffle_k<8>(src.data(), n, dst.data());
      break;
    default:
      unshuffle_generic(src.data(), n, k, dst.data());
      break;
  }
  if (size > n * k) std::memcpy(dst.data() + n * k, src.data() + n * k, size - n * k);
}

codec choose_codec(std::span<const std::byte> src, std::size_t element_size, bool floating,
                   const codec_policy& policy) {
  if (!policy.compress || src.empty() || src.size() > lz4_max) return codec::raw;
  const std::size_t k = element_size == 0 ? 1 : element_size;
  const bool try_shuffle = policy.shuffle && floating && k > 1 && src.size() % k == 0;

  constexpr std::size_t window = 16 * 1024;
  constexpr std::size_t windows = 4;
  constexpr std::size_t small_window = 4 * 1024;

  // The sample: `windows` windows spread evenly (first at the start, last at the end), each
  // starting at an element boundary; one 4 KiB window from the middle of a chunk under 64 KiB
  // (a small leaf: sampling it whole would cost more than encoding it). The decision only
  // chooses what to try: encode_chunk still stores raw whatever does not pay in full.
  std::array<std::span<const std::byte>, windows> parts;
  std::size_t nparts = 0;
  if (src.size() < windows * window) {
    const std::size_t w =
        std::min(src.size(), small_window / k * k == 0 ? k : small_window / k * k);
    std::size_t off = (src.size() - w) / 2 / k * k;
    parts[nparts++] = src.subspan(off, std::min(w, src.size() - off));
  } else {
    const std::size_t w = window / k * k;
    const std::size_t span_end = src.size() - w;
    for (std::size_t j = 0; j < windows; ++j) {
      std::size_t off = span_end / (windows - 1) * j;
      off = off / k * k;
      parts[nparts++] = src.subspan(off, w);
    }
  }

  std::size_t sample_raw = 0;
  std::size_t largest = 0;
  for (std::size_t j = 0; j < nparts; ++j) {
    sample_raw += parts[j].size();
    largest = std::max(largest, parts[j].size());
  }
  std::byte* out = sample_scratch().get(largest + (try_shuffle ? largest : 0));
  std::byte* shuffled = out + largest;

  // Sum of the windows' compressed sizes; a window LZ4 cannot shrink counts as stored raw.
  auto sample = [&](bool shuffle) -> std::size_t {
    std::size_t total = 0;
    for (std::size_t j = 0; j < nparts; ++j) {
      const std::byte* in = parts[j].data();
      if (shuffle) {
        shuffle_bytes(parts[j], k, {shuffled, parts[j].size()});
        in = shuffled;
      }
      const std::size_t cap = parts[j].size() - 1;
      std::size_t r = lz4_into(in, parts[j].size(), out, cap);
      if (r == 0) r = parts[j].size();  // does not compress: count it as stored raw
      total += r;
    }
    return total;
  };

  const double need = std::max(policy.min_ratio, 1.0);
  auto ratio = [&](std::size_t stored) {
    return stored == 0 ? 0.0 : static_cast<double>(sample_raw) / static_cast<double>(stored);
  };

  const std::size_t plain = sample(false);
  const double plain_ratio = ratio(plain);
  double shuffle_ratio = 0.0;
  if (try_shuffle) shuffle_ratio = ratio(sample(true));

  // Shuffling costs a transpose on both save and load: take it only for a real gain (> 3 %).
  if (try_shuffle && shuffle_ratio >= need && shuffle_ratio > plain_ratio * 1.03) {
    return codec::shuffle_lz4;
  }
  if (plain_ratio >= need && plain_ratio > 1.0) return codec::lz4;
  if (try_shuffle && shuffle_ratio >= need && shuffle_ratio > 1.0) return codec::shuffle_lz4;
  return codec::raw;
}

std::size_t encode_bound(std::size_t raw_size) noexcept {
  // LZ4's worst case (LZ4_COMPRESSBOUND), computed without its int limits.
  return raw_size + raw_size / 255 + 16;
}

std::size_t encode_chunk(codec c, std::span<const std::byte> src, std::size_t element_size,
                         std::span<std::byte> dst, double min_ratio) {
  switch (c) {
    case codec::raw:
      if (dst.size() < src.size()) return 0;
      if (!src.empty()) std::memcpy(dst.data(), src.data(), src.size());
      return src.size();
    case codec::lz4: {
      std::size_t cap = std::min(worthwhile_capacity(src.size(), min_ratio), dst.size());
      return lz4_into(src.data(), src.size(), dst.data(), cap);
    }
    case codec::shuffle_lz4: {
      if (src.empty() || src.size() > lz4_max) return 0;
      std::size_t cap = std::min(worthwhile_capacity(src.size(), min_ratio), dst.size());
      if (cap == 0) return 0;
      std::byte* tmp = shuffle_scratch().get(src.size());
      shuffle_bytes(src, element_size, {tmp, src.size()});
      return lz4_into(tmp, src.size(), dst.data(), cap);
    }
  }
  return 0;
}

result<void> decode_chunk(codec c, std::span<const std::byte> stored, std::size_t element_size,
                          std::span<std::byte> dst) {
  switch (c) {
    case codec::raw:
      if (stored.size() != dst.size()) {
        return fail(errc::corrupt, "raw chunk holds " + size_text(stored.size()) +
                                       " bytes, expected " + size_text(dst.size()));
      }
      if (!dst.empty()) std::memcpy(dst.data(), stored.data(), dst.size());
      return success();
    case codec::lz4:
      if (!lz4_exact(stored, dst.data(), dst.size())) {
        return fail(errc::corrupt, "lz4 chunk of " + size_text(stored.size()) +
                                       " bytes does not decode to the expected " +
                                       size_text(dst.size()) + " bytes");
      }
      return success();
    case codec::shuffle_lz4: {
      std::byte* tmp = dst.size() <= lz4_max ? shuffle_scratch().get(dst.size()) : nullptr;
      if (tmp == nullptr || !lz4_exact(stored, tmp, dst.size())) {
        return fail(errc::corrupt, "shuffle-lz4 chunk of " + size_text(stored.size()) +
                                       " bytes does not decode to the expected " +
                                       size_text(dst.size()) + " bytes");
      }
      unshuffle_bytes({tmp, dst.size()}, element_size, dst);
      return success();
    }
  }
  return fail(errc::corrupt, "unknown codec " + std::to_string(static_cast<int>(c)));
}

result<void> decode_chunk(codec c, std::span<const std::byte> stored, std::size_t element_size,
                          std::span<const fill_run> runs, std::span<std::byte> dst) {
  if (runs.empty()) return decode_chunk(c, stored, element_size, dst);
  const std::uint64_t covered = run_bytes(runs);
  if (covered > dst.size()) {
    return fail(errc::corrupt, "fill runs of " + size_text(covered) + " bytes exceed the chunk's " +
                                   size_text(dst.size()));
  }
  CKPT_TRY(decode_chunk(c, stored, element_size, dst.first(dst.size() - covered)));
  scatter_rest(dst, runs, element_size);
  return success();
}

}  // namespace ckpt::format
