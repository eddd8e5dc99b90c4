// The on-disk format: chunk codecs, the index and the commit marker (docs/FORMAT.md).
#include "format/codec.hpp"
#include "format/index.hpp"
#include "support.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace ckpt;
namespace fmt = ckpt::format;

namespace {

// --- data --------------------------------------------------------------------------------------

std::vector<std::byte> to_bytes(const std::vector<std::uint8_t>& v) {
  std::vector<std::byte> out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size());
  return out;
}

std::vector<std::byte> random_vec(std::size_t n, std::uint64_t seed) {
  return to_bytes(test::random_bytes(n, seed));
}

struct splitmix {
  std::uint64_t x;
  std::uint64_t next() {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

/// N(0, sd) float32 by Box-Muller over a deterministic PRNG.
std::vector<float> gaussian(std::size_t n, double sd, std::uint64_t seed) {
  splitmix r{seed};
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; i += 2) {
    double u1 = std::max(r.uniform(), 1e-300), u2 = r.uniform();
    double m = std::sqrt(-2.0 * std::log(u1));
    v[i] = static_cast<float>(sd * m * std::cos(2 * M_PI * u2));
    if (i + 1 < n) v[i + 1] = static_cast<float>(sd * m * std::sin(2 * M_PI * u2));
  }
  return v;
}

template <class T>
std::vector<std::byte> as_byte_vector(const std::vector<T>& v) {
  std::vector<std::byte> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<std::byte> gaussian_f32(std::size_t n, std::uint64_t seed) {
  return as_byte_vector(gaussian(n, 0.02, seed));
}

/// N(0, 0.02) rounded to bfloat16 (round to nearest even).
std::vector<std::byte> gaussian_bf16(std::size_t n, std::uint64_t seed) {
  auto f = gaussian(n, 0.02, seed);
  std::vector<std::uint16_t> h(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, &f[i], 4);
    u += 0x7fff + ((u >> 16) & 1);
    h[i] = static_cast<std::uint16_t>(u >> 16);
  }
  return as_byte_vector(h);
}

/// f32 table of `rows` x `cols`; 10 % of rows (chosen at random) Gaussian, the rest +0.0.
std::vector<std::byte> sparse_f32(std::size_t rows, std::size_t cols, std::uint64_t seed) {
  splitmix r{seed};
  auto v = gaussian(rows * cols, 0.02, seed + 1);
  for (std::size_t i = 0; i < rows; ++i) {
    if (r.next() % 10 != 0)
      std::fill_n(v.begin() + static_cast<std::ptrdiff_t>(i * cols), cols, 0.0f);
  }
  return as_byte_vector(v);
}

struct dataset {
  std::string name;
  std::vector<std::byte> bytes;
  std::size_t element_size;
  bool floating;
};

std::vector<dataset> datasets(std::size_t bytes) {
  return {
      {"random", random_vec(bytes, 1), 4, false},
      {"zeros", std::vector<std::byte>(bytes), 4, true},
      {"sparse", sparse_f32(bytes / 4 / 256, 256, 2), 4, true},
      {"gaussian-f32", gaussian_f32(bytes / 4, 3), 4, true},
      {"gaussian-bf16", gaussian_bf16(bytes / 2, 4), 2, true},
  };
}

/// Encodes with `c`; returns the stored bytes, or empty when the codec declined (returned 0).
std::vector<std::byte> encode(fmt::codec c, std::span<const std::byte> src, std::size_t es,
                              double min_ratio = 1.0) {
  std::vector<std::byte> dst(fmt::encode_bound(src.size()));
  std::size_t n = fmt::encode_chunk(c, src, es, dst, min_ratio);
  dst.resize(n);
  return dst;
}

// --- JSON helpers ------------------------------------------------------------------------------

/// JSON text followed by the padding the parsers require.
struct padded {
  explicit padded(std::string s) : text(std::move(s)), size(text.size()) {
    text.append(fmt::parse_padding, '\0');
  }
  std::string_view view() const { return {text.data(), size}; }
  std::string text;
  std::size_t size;
};

result<fmt::index> parse(const std::string& json, const fmt::parse_limits& limits = {}) {
  padded p(json);
  return fmt::parse_index(p.view(), limits);
}

result<fmt::commit_marker> parse_c(const std::string& json) {
  padded p(json);
  return fmt::parse_commit(p.view());
}

/// Replaces the one occurrence of `from` (which must be present).
std::string replaced(std::string s, const std::string& from, const std::string& to) {
  auto pos = s.find(from);
  REQUIRE(pos != std::string::npos);
  s.replace(pos, from.size(), to);
  return s;
}

}  // namespace

// =============================================================================================
// Codecs
// =============================================================================================

TEST_CASE("codec names round trip", "[format]") {
  for (auto c : {fmt::codec::raw, fmt::codec::lz4, fmt::codec::shuffle_lz4}) {
    auto r = fmt::parse_codec(fmt::codec_name(c));
    REQUIRE(r);
    CHECK(r.value() == c);
  }
  CHECK(fmt::codec_name(fmt::codec::shuffle_lz4) == "shuffle-lz4");
  auto bad = fmt::parse_codec("zstd");
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::corrupt);
  CHECK_THAT(bad.error().message(), Catch::Contains("zstd"));
}

TEST_CASE("checksums are XXH3-64 in 16 hex digits", "[format]") {
  auto data = random_vec(1000, 7);
  std::uint64_t h = fmt::checksum(data);
  CHECK(h == fmt::checksum(data));
  data[500] ^= std::byte{1};
  CHECK(h != fmt::checksum(data));
  CHECK(fmt::checksum({}) == 0x2d06800538d394c2ULL);  // XXH3_64bits of no bytes
  for (std::uint64_t v :
       {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{0xdeadbeef}, ~std::uint64_t{0}, h}) {
    auto s = fmt::checksum_hex(v);
    CHECK(s.size() == 16);
    auto back = fmt::parse_checksum_hex(s);
    REQUIRE(back);
    CHECK(back.value() == v);
  }
  CHECK(fmt::checksum_hex(0xab) == "00000000000000ab");
  CHECK(fmt::parse_checksum_hex("00000000000000AB").value() == 0xab);
  for (const char* bad : {"", "0", "000000000000000", "00000000000000000", "000000000000000g",
                          " 00000000000000a", "0x00000000000000", "-000000000000001"}) {
    auto r = fmt::parse_checksum_hex(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::corrupt);
  }
}

TEST_CASE("shuffle matches its definition and round trips", "[format]") {
  for (std::size_t es : {1, 2, 3, 4, 8}) {
    for (std::size_t n : {0, 1, 7, 1023, 1024, 1025, 4099, 100000}) {
      const std::size_t size = n * es;
      auto src = random_vec(size, es * 1000 + n);
      std::vector<std::byte> sh(size), back(size);
      fmt::shuffle_bytes(src, es, sh);
      for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t b = 0; b < es; ++b) {
          if (sh[b * n + i] != src[i * es + b]) {
            FAIL("shuffle element size " << es << " n " << n << " at " << i << "," << b);
          }
        }
      }
      fmt::unshuffle_bytes(sh, es, back);
      CHECK(back == src);
    }
  }
  // A trailing partial element (never produced by the writer) is kept in place and round trips.
  for (std::size_t size : {1, 5, 4097, 10001}) {
    auto src = random_vec(size, size);
    std::vector<std::byte> sh(size), back(size);
    fmt::shuffle_bytes(src, 4, sh);
    fmt::unshuffle_bytes(sh, 4, back);
    CHECK(back == src);
    CHECK(std::memcmp(sh.data() + size / 4 * 4, src.data() + size / 4 * 4, size % 4) == 0);
  }
}

TEST_CASE("every codec round trips every kind of data", "[format]") {
  for (std::size_t bytes : {std::size_t{0}, std::size_t{4}, std::size_t{4096},
                            std::size_t{100 * 1024}, std::size_t{4 << 20}}) {
    for (const auto& d : datasets(bytes)) {
      for (auto c : {fmt::codec::raw, fmt::codec::lz4, fmt::codec::shuffle_lz4}) {
        INFO(d.name << " " << bytes << " bytes, codec " << fmt::codec_name(c));
        auto stored = encode(c, d.bytes, d.element_size);
        if (c == fmt::codec::raw) {
          CHECK(stored.size() == d.bytes.size());
        }
        if (stored.empty() && c != fmt::codec::raw) {
          // Declined: it does not compress (random data, or nothing at all). Nothing to decode.
          CHECK(((d.name != "zeros" && d.name != "sparse") || bytes <= 4));
          continue;
        }
        std::vector<std::byte> out(d.bytes.size());
        auto r = fmt::decode_chunk(c, stored, d.element_size, out);
        REQUIRE(r);
        CHECK(out == d.bytes);
      }
    }
  }
}

TEST_CASE("encode_chunk declines when the ratio is below min_ratio", "[format]") {
  auto random = random_vec(1 << 20, 9);
  std::vector<std::byte> rdst(fmt::encode_bound(random.size()));
  CHECK(fmt::encode_chunk(fmt::codec::lz4, random, 4, rdst, 1.0) == 0);
  auto g = gaussian_f32(1 << 18, 5);
  std::vector<std::byte> dst(fmt::encode_bound(g.size()));
  CHECK(fmt::encode_chunk(fmt::codec::lz4, g, 4, dst, 1.10) == 0);
  CHECK(fmt::encode_chunk(fmt::codec::shuffle_lz4, g, 4, dst, 1.10) == 0);
  // Shuffled Gaussian f32 compresses a little (about 1.08): accepted at 1.0, stored smaller.
  std::size_t n = fmt::encode_chunk(fmt::codec::shuffle_lz4, g, 4, dst, 1.0);
  CHECK(n > 0);
  CHECK(n < g.size());
  std::vector<std::byte> zeros(1 << 20);
  n = fmt::encode_chunk(fmt::codec::lz4, zeros, 4, dst, 1.10);
  CHECK(n > 0);
  CHECK(n < zeros.size() / 100);
}

TEST_CASE("choose_codec picks raw for incompressible data and LZ4 for compressible", "[format]") {
  fmt::codec_policy policy;  // shuffle on
  policy.min_ratio = 1.10;   // low enough for bf16's 1.19 (the default 1.5 stores it raw)
  for (std::size_t bytes : {std::size_t{4 << 20}, std::size_t{32 * 1024}}) {
    INFO(bytes << " bytes");
    auto random = random_vec(bytes, 11);
    CHECK(fmt::choose_codec(random, 4, false, policy) == fmt::codec::raw);
    CHECK(fmt::choose_codec(random, 4, true, policy) == fmt::codec::raw);
    auto g = gaussian_f32(bytes / 4, 12);
    CHECK(fmt::choose_codec(g, 4, true, policy) == fmt::codec::raw);
    std::vector<std::byte> zeros(bytes);
    auto z = fmt::choose_codec(zeros, 4, true, policy);
    CHECK((z == fmt::codec::lz4 || z == fmt::codec::shuffle_lz4));
    auto sp = sparse_f32(bytes / 4 / 256, 256, 13);
    auto s = fmt::choose_codec(sp, 4, true, policy);
    CHECK((s == fmt::codec::lz4 || s == fmt::codec::shuffle_lz4));
    // bf16 Gaussian: shuffle gets about 1.19, plain LZ4 nothing.
    auto bf = gaussian_bf16(bytes / 2, 14);
    // (A chunk under 64 KiB is judged on one 4 KiB sample, where LZ4 finds less: bf16's modest
    // gain is then not seen. Only the big chunk is expected to pick the shuffle.)
    if (bytes >= (64 << 10))
      CHECK(fmt::choose_codec(bf, 2, true, policy) == fmt::codec::shuffle_lz4);
    fmt::codec_policy no_shuffle = policy;
    no_shuffle.shuffle = false;
    CHECK(fmt::choose_codec(bf, 2, true, no_shuffle) == fmt::codec::raw);
    // Not floating: never shuffled.
    CHECK(fmt::choose_codec(bf, 2, false, policy) == fmt::codec::raw);
    // The default min_ratio (1.5) stores bf16 raw: a 1.19 ratio costs more than it saves.
    CHECK(fmt::choose_codec(bf, 2, true, fmt::codec_policy{}) == fmt::codec::raw);
  }
  fmt::codec_policy off;
  off.compress = false;
  CHECK(fmt::choose_codec(std::vector<std::byte>(1 << 20), 4, true, off) == fmt::codec::raw);
  CHECK(fmt::choose_codec({}, 4, true, fmt::codec_policy{}) == fmt::codec::raw);
  // An element size that does not divide the chunk: no shuffle, still a valid choice.
  std::vector<std::byte> odd(100001);
  CHECK(fmt::choose_codec(odd, 4, true, fmt::codec_policy{}) == fmt::codec::lz4);
}

TEST_CASE("the chosen codec's encoding meets min_ratio on the workloads", "[format]") {
  const fmt::codec_policy policy;
  for (const auto& d : datasets(4 << 20)) {
    INFO(d.name);
    auto c = fmt::choose_codec(d.bytes, d.element_size, d.floating, policy);
    auto stored = encode(c, d.bytes, d.element_size, policy.min_ratio);
    if (c == fmt::codec::raw) continue;
    REQUIRE(!stored.empty());
    CHECK(static_cast<double>(d.bytes.size()) / static_cast<double>(stored.size()) >=
          policy.min_ratio);
    std::vector<std::byte> out(d.bytes.size());
    REQUIRE(fmt::decode_chunk(c, stored, d.element_size, out));
    CHECK(out == d.bytes);
  }
}

TEST_CASE("decoding damaged or mis-sized chunks is corrupt, never a crash", "[format]") {
  auto sp = sparse_f32(4096, 64, 21);  // 1 MiB
  for (auto c : {fmt::codec::lz4, fmt::codec::shuffle_lz4}) {
    INFO(fmt::codec_name(c));
    auto stored = encode(c, sp, 4);
    REQUIRE(!stored.empty());
    std::vector<std::byte> out(sp.size());

    // Wrong expected sizes.
    for (std::ptrdiff_t delta : {-4, -1, 1, 4, 4096}) {
      std::vector<std::byte> wrong(
          static_cast<std::size_t>(static_cast<std::ptrdiff_t>(sp.size()) + delta));
      auto r = fmt::decode_chunk(c, stored, 4, wrong);
      REQUIRE_FALSE(r);
      CHECK(r.error() == errc::corrupt);
    }
    // Truncations.
    for (std::size_t keep :
         {std::size_t{0}, std::size_t{1}, std::size_t{16}, stored.size() / 2, stored.size() - 1}) {
      auto r = fmt::decode_chunk(c, std::span(stored).first(keep), 4, out);
      REQUIRE_FALSE(r);
      CHECK(r.error() == errc::corrupt);
    }
    // Bit flips and garbage: LZ4 has no checksum, so a flip may still decode (the chunk
    // checksum catches that); what must hold is: no crash, and success only with the exact size.
    splitmix rng{99};
    int failures = 0;
    for (int i = 0; i < 300; ++i) {
      auto bad = stored;
      for (int k = 0; k < 1 + i % 4; ++k)
        bad[rng.next() % bad.size()] ^= std::byte{0x5a};
      auto r = fmt::decode_chunk(c, bad, 4, out);
      if (!r) {
        CHECK(r.error() == errc::corrupt);
        ++failures;
      }
    }
    CHECK(failures > 0);
    for (int i = 0; i < 50; ++i) {
      auto garbage = random_vec(1 + rng.next() % 5000, rng.next());
      auto r = fmt::decode_chunk(c, garbage, 4, out);
      if (!r) CHECK(r.error() == errc::corrupt);
    }
  }
  // Raw: the stored size must equal the expected size.
  std::vector<std::byte> out(100);
  auto r = fmt::decode_chunk(fmt::codec::raw, std::vector<std::byte>(99), 4, out);
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::corrupt);
  CHECK(fmt::decode_chunk(fmt::codec::raw, std::vector<std::byte>(100), 4, out));
  // A compressed chunk of nothing and an absurd expected size.
  std::vector<std::byte> none;
  CHECK_FALSE(fmt::decode_chunk(fmt::codec::lz4, none, 4, out));
}

// =============================================================================================
// Index
// =============================================================================================

namespace {

fmt::chunk_entry chunk(std::uint32_t file, std::uint64_t off, std::uint64_t stored,
                       std::uint64_t raw, fmt::codec c, std::uint64_t h) {
  fmt::chunk_entry e;
  e.file = file;
  e.offset = off;
  e.stored_size = stored;
  e.raw_size = raw;
  e.codec = c;
  e.xxh3 = h;
  return e;
}

/// An index over `structure` (leaves as specs): one raw chunk per non-empty leaf, packed back
/// to back in data-00000.bin.
fmt::index make_index(const tree& structure) {
  fmt::index ix;
  fmt::set_structure(ix, structure);
  std::uint64_t off = 0;
  for (const auto& fl : structure.flatten()) {
    fmt::leaf_entry le;
    le.path = fl.path;
    le.dtype = fl.array.dtype();
    le.shape = fl.array.shape();
    le.num_bytes = fl.array.num_bytes();
    if (le.num_bytes) {
      le.chunks.push_back(chunk(0, off, le.num_bytes, le.num_bytes, fmt::codec::raw, off * 31));
      off += le.num_bytes;
    }
    ix.leaves.push_back(std::move(le));
  }
  ix.files.push_back({fmt::data_file_name(0), off, {}});
  return ix;
}

array spec(dtype t, shape s) {
  return array::spec(t, std::move(s)).value();
}

}  // namespace

TEST_CASE("data file names", "[format]") {
  CHECK(fmt::data_file_name(0) == "data-00000.bin");
  CHECK(fmt::data_file_name(42) == "data-00042.bin");
  CHECK(fmt::data_file_name(123456) == "data-123456.bin");
}

TEST_CASE("index round trip: files, leaves, dict/list/None, unicode and escaped keys", "[format]") {
  tree t = tree::dict();
  tree params = tree::dict();
  params.set("w", spec(dtype::f32, {64, 32}));
  params.set("b", spec(dtype::bf16, {32}));
  t.set("params", std::move(params));
  t.set("scalar", spec(dtype::i64, {}));     // 0-d
  t.set("empty", spec(dtype::f32, {0, 3}));  // no bytes, no chunks
  t.set("nothing", tree());
  tree l = tree::list();
  l.append(spec(dtype::u8, {5}));
  l.append(tree());
  l.append(tree::list({spec(dtype::f64, {2, 2})}));
  l.append(tree::dict());
  t.set("xs", std::move(l));
  t.set("ключ/é~x", spec(dtype::f16, {3}));                          // '/' and '~' escaped in paths
  t.set("quote\"back\\slash\n\t\x01\x1f", spec(dtype::bool_, {1}));  // JSON escapes
  t.set("", spec(dtype::u32, {1}));                                  // an empty key
  t.set("emoji 🙂", spec(dtype::f8_e4m3, {7}));

  fmt::index ix = make_index(t);
  // A second file, several chunks and codecs on one leaf.
  ix.files.push_back({"data-00001.bin", 1 << 20, {}});
  auto& w = ix.leaves[0];
  REQUIRE(w.path == "params/w");
  w.chunks.clear();
  w.chunks.push_back(chunk(1, 0, 1000, 4096, fmt::codec::lz4, 0x0123456789abcdefULL));
  w.chunks.push_back(chunk(1, 4096, 3000, 4096, fmt::codec::shuffle_lz4, 0xfedcba9876543210ULL));

  std::string json = fmt::encode_index(ix);
  CHECK(json.rfind(R"({"format":"ckpt-index","version":[1,2],"files":[{"name":"data-00000.bin",)",
                   0) == 0);
  auto r = parse(json);
  INFO(json);
  REQUIRE(r);
  const fmt::index& p = r.value();
  REQUIRE(p.files.size() == ix.files.size());
  for (std::size_t i = 0; i < ix.files.size(); ++i) {
    CHECK(p.files[i].name == ix.files[i].name);
    CHECK(p.files[i].size == ix.files[i].size);
  }
  REQUIRE(p.leaves.size() == ix.leaves.size());
  for (std::size_t i = 0; i < ix.leaves.size(); ++i) {
    const auto& a = ix.leaves[i];
    const auto& b = p.leaves[i];
    INFO(a.path);
    CHECK(a.path == b.path);
    CHECK(a.dtype == b.dtype);
    CHECK(a.shape == b.shape);
    CHECK(a.num_bytes == b.num_bytes);
    REQUIRE(a.chunks.size() == b.chunks.size());
    for (std::size_t c = 0; c < a.chunks.size(); ++c) {
      CHECK(a.chunks[c].file == b.chunks[c].file);
      CHECK(a.chunks[c].offset == b.chunks[c].offset);
      CHECK(a.chunks[c].stored_size == b.chunks[c].stored_size);
      CHECK(a.chunks[c].raw_size == b.chunks[c].raw_size);
      CHECK(a.chunks[c].codec == b.chunks[c].codec);
      CHECK(a.chunks[c].xxh3 == b.chunks[c].xxh3);
    }
  }
  const tree ps = fmt::structure(p);
  CHECK(ps.same_structure(t));
  CHECK(ps.find("ключ~1é~0x") != nullptr);
  CHECK(ps.get("quote\"back\\slash\n\t\x01\x1f") != nullptr);
  CHECK(ps.find("xs/1")->is_none());
  CHECK(ps.find("scalar")->leaf().shape().empty());
  CHECK(ps.find("empty")->leaf().num_bytes() == 0);
  CHECK(p.leaves[3].chunks.empty());
  // Deterministic: the same index encodes to the same bytes.
  CHECK(fmt::encode_index(p) == json);
  // Control characters are escaped, never raw, in the JSON.
  for (char ch : json)
    CHECK(static_cast<unsigned char>(ch) >= 0x20);
}

TEST_CASE("UTF-8 check for keys", "[format]") {
  CHECK(fmt::is_valid_utf8(""));
  CHECK(fmt::is_valid_utf8("ключ 🙂 ~/\n"));
  CHECK_FALSE(fmt::is_valid_utf8("\xff"));
  CHECK_FALSE(fmt::is_valid_utf8("a\xc3"));  // truncated sequence
}

TEST_CASE("index edge shapes: empty tree, None root, leaf root", "[format]") {
  for (const tree& t : {tree(), tree::dict(), tree::list(), tree(spec(dtype::f32, {4}))}) {
    auto ix = make_index(t);
    auto r = parse(fmt::encode_index(ix));
    REQUIRE(r);
    CHECK(fmt::structure(r.value()).same_structure(t));
    CHECK(r.value().leaves.size() == t.num_leaves());
  }
}

TEST_CASE("index: newer minor versions are accepted, unknown keys ignored", "[format]") {
  auto json = fmt::encode_index(make_index(tree::dict({{"a", spec(dtype::f32, {2})}})));
  auto newer = replaced(json, R"("version":[1,2])", R"("version":[1,7],"future":{"x":[1,2]})");
  newer = replaced(newer, R"("dtype":"f32")", R"("dtype":"f32","future_leaf_key":true)");
  auto r = parse(newer);
  REQUIRE(r);
  CHECK(r.value().leaves.size() == 1);
  CHECK(r.value().read_minor == 7);  // (what ckpt-inspect shows: the file's version)
  // The same keys at our own version are corrupt.
  auto same = replaced(json, R"("version":[1,2])", R"("version":[1,2],"future":1)");
  auto bad = parse(same);
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::corrupt);
  CHECK_THAT(bad.error().message(), Catch::Contains("future"));
  // Keys written with JSON escapes are the same keys.
  auto escaped = replaced(json, R"("path":)", R"("p\u0061th":)");
  CHECK(parse(escaped));
}

namespace {

/// The base index the hostile cases mutate: two files, three leaves.
const std::string base_index =
    R"({"format":"ckpt-index","version":[1,0],)"
    R"("files":[{"name":"data-00000.bin","size":8192},{"name":"data-00001.bin","size":100}],)"
    R"("tree":{"dict":[["params",{"dict":[["w",{"leaf":0}],["b",{"leaf":1}]]}],)"
    R"(["xs",{"list":[{"leaf":2},null]}]]},)"
    R"("leaves":[)"
    R"({"path":"params/w","dtype":"f32","shape":[16,16],)"
    R"("chunks":[[0,0,600,1024,"lz4","00000000000000aa"]]},)"
    R"({"path":"params/b","dtype":"bf16","shape":[16],)"
    R"("chunks":[[0,4096,32,32,"raw","00000000000000bb"]]},)"
    R"({"path":"xs/0","dtype":"i64","shape":[],"chunks":[[1,0,8,8,"raw","00000000000000cc"]]}]})";

struct hostile_case {
  std::string name;
  std::function<std::string()> json;
  errc expected;
  std::string needle;  // must appear in the message
  fmt::parse_limits limits{};
};

std::string sub(const std::string& from, const std::string& to) {
  return replaced(base_index, from, to);
}

std::string deep_tree(std::size_t depth) {
  std::string s;
  s.reserve(depth * 12 + 8);
  for (std::size_t i = 0; i < depth; ++i)
    s += R"({"list":[)";
  s += "null";
  for (std::size_t i = 0; i < depth; ++i)
    s += "]}";
  return s;
}

fmt::parse_limits limits_with(std::function<void(fmt::parse_limits&)> f) {
  fmt::parse_limits l;
  f(l);
  return l;
}

}  // namespace

TEST_CASE("the base index of the hostile cases is valid", "[format]") {
  auto r = parse(base_index);
  INFO((r ? "" : r.error().what()));
  REQUIRE(r);
  CHECK(r.value().leaves.size() == 3);
  CHECK(fmt::structure(r.value()).find("xs/1")->is_none());
}

TEST_CASE("hostile indexes are refused with the right error naming the offender", "[format]") {
  const auto F = [](std::string from, std::string to) {
    return [from, to] { return sub(from, to); };
  };
  const std::string file1 = R"("data-00001.bin")";
  std::vector<hostile_case> cases = {
      // file names
      {"traversal ../x", F(file1, R"("../x")"), errc::corrupt, "../x"},
      {"absolute /abs", F(file1, R"("/abs")"), errc::corrupt, "/abs"},
      {"slash a/b", F(file1, R"("a/b")"), errc::corrupt, "a/b"},
      {"empty name", F(file1, R"("")"), errc::corrupt, "not a plain file name"},
      {"dot", F(file1, R"(".")"), errc::corrupt, "\".\""},
      {"dotdot", F(file1, R"("..")"), errc::corrupt, "\"..\""},
      {"NUL inside", F(file1, R"("data\u0000.bin")"), errc::corrupt, "data?.bin"},
      {"duplicate file", F(file1, R"("data-00000.bin")"), errc::corrupt, "listed twice"},
      {"name too long", F(file1, "\"" + std::string(300, 'a') + "\""), errc::corrupt,
       "not a plain file name"},
      // shapes and dtypes
      {"overflowing shape", F("[16,16]", "[4611686018427387904,4611686018427387904]"),
       errc::corrupt, "params/w"},
      {"negative extent", F("[16,16]", "[16,-16]"), errc::corrupt, "negative extent"},
      {"rank above cap", F("[16,16]", "[1,1,1,1,16,16]"), errc::limit_exceeded, "rank",
       limits_with([](auto& l) { l.max_rank = 4; })},
      {"unknown dtype", F(R"("f32")", R"("f33")"), errc::corrupt, "f33"},
      {"extent as float", F("[16,16]", "[16,16.0]"), errc::corrupt, "params/w"},
      // chunks
      {"unknown codec", F(R"("lz4")", R"("zstd")"), errc::corrupt, "zstd"},
      {"chunk past file end", F(R"("size":100)", R"("size":7)"), errc::corrupt,
       "past the end of \"data-00001.bin\""},
      {"overlapping chunks", F("[0,4096,32,32", "[0,500,32,32"), errc::corrupt, "overlaps"},
      {"raw stored != raw", F("[0,4096,32,32", "[0,4096,31,32"), errc::corrupt,
       "raw chunk stores 31"},
      {"chunks not summing", F("[0,0,600,1024", "[0,0,600,1000"), errc::corrupt,
       "chunks hold 1000 raw bytes, expected 1024"},
      {"file index out of range", F("[1,0,8,8", "[2,0,8,8"), errc::corrupt,
       "file index 2 out of range"},
      {"file index above 32 bits", F("[1,0,8,8", "[4294967296,0,8,8"), errc::corrupt,
       "file index 4294967296"},
      {"offset overflow", F("[1,0,8,8", "[1,18446744073709551615,8,8"), errc::corrupt, "overflows"},
      {"impossible lz4 size", F("[0,0,600,1024", "[0,0,2000,1024"), errc::corrupt, "impossible"},
      {"empty chunk", F("[1,0,8,8", "[1,0,0,0"), errc::corrupt, "empty chunk"},
      {"chunk with 5 elements", F(R"(,"00000000000000cc")", ""), errc::corrupt, "got 5"},
      {"checksum 15 digits", F("00000000000000aa", "0000000000000aa"), errc::corrupt,
       "0000000000000aa"},
      {"checksum not hex", F("00000000000000aa", "00000000000000ag"), errc::corrupt,
       "00000000000000ag"},
      // sizes and caps
      {"1 TiB file beyond cap", F(R"("size":8192)", R"("size":1099511627776)"),
       errc::limit_exceeded, "1099511627776",
       limits_with([](auto& l) { l.max_file_bytes = 1ull << 30; })},
      {"leaves above cap", [] { return base_index; }, errc::limit_exceeded, "more than 2 leaves",
       limits_with([](auto& l) { l.max_leaves = 2; })},
      {"None nodes above cap", F(R"({"leaf":2},null)", R"({"leaf":2},null,null,null,null)"),
       errc::limit_exceeded, "None/dict/list nodes",
       limits_with([](auto& l) { l.max_tree_nodes = 6; })},
      {"files above cap", [] { return base_index; }, errc::limit_exceeded, "more than 1 files",
       limits_with([](auto& l) { l.max_files = 1; })},
      {"chunks above cap", [] { return base_index; }, errc::limit_exceeded, "more than 2 chunks",
       limits_with([](auto& l) { l.max_chunks = 2; })},
      {"key above cap", [] { return base_index; }, errc::limit_exceeded, "params",
       limits_with([](auto& l) { l.max_key_bytes = 3; })},
      {"index bytes above cap", [] { return base_index; }, errc::limit_exceeded, "cap",
       limits_with([](auto& l) { l.max_index_bytes = 100; })},
      {"deep nesting 100000", F(R"({"leaf":2},null)", R"({"leaf":2},)" + deep_tree(100000)),
       errc::limit_exceeded, "nesting"},
      {"nesting above small cap", [] { return base_index; }, errc::limit_exceeded, "deeper than 2",
       limits_with([](auto& l) { l.max_depth = 2; })},
      // tree
      {"duplicate dict key",
       [] {
         return replaced(sub(R"(["b",{"leaf":1}])", R"(["w",{"leaf":1}])"), R"("params/b")",
                         R"("params/w")");
       },
       errc::corrupt, "duplicate key \"w\""},
      {"leaf referenced twice", F(R"({"leaf":1})", R"({"leaf":0})"), errc::corrupt,
       "referenced twice"},
      {"leaf out of order", F(R"({"leaf":0}],["b",{"leaf":1})", R"({"leaf":1}],["b",{"leaf":0})"),
       errc::corrupt, "leaf 1 referenced out of order"},
      {"leaf missing from tree", F(R"({"leaf":2},null)", "null"), errc::corrupt,
       "tree references 2 leaves but \"leaves\" holds 3"},
      {"path not matching tree", F(R"("xs/0")", R"("xs/1")"), errc::corrupt,
       "\"xs/1\" does not match the tree's path \"xs/0\""},
      {"unknown node kind", F(R"({"leaf":2})", R"({"leef":2})"), errc::corrupt, "leef"},
      {"node with two keys", F(R"({"leaf":2})", R"({"leaf":2,"list":[]})"), errc::corrupt,
       "exactly one key"},
      {"node with no key", F(R"({"leaf":2},null)", R"({"leaf":2},{})"), errc::corrupt,
       "exactly one key"},
      {"node as a number", F(R"({"leaf":2},null)", R"({"leaf":2},5)"), errc::corrupt,
       "must be null or an object"},
      {"dict item with 3 elements", F(R"(["b",{"leaf":1}])", R"(["b",{"leaf":1},3])"),
       errc::corrupt, "more than two elements"},
      {"dict key not a string", F(R"(["b",{"leaf":1}])", R"([7,{"leaf":1}])"), errc::corrupt,
       "tree dict key: expected a string"},
      // schema
      {"wrong format string", F(R"("ckpt-index")", R"("ckpt-commit")"), errc::corrupt,
       "\"ckpt-commit\""},
      {"version 2.0", F("[1,0]", "[2,0]"), errc::unsupported_version,
       "index.json: format version 2.0 is newer than this reader (1.x)"},
      {"version 0.9", F("[1,0]", "[0,9]"), errc::unsupported_version, "0.9 is older"},
      {"version missing", F(R"("version":[1,0],)", ""), errc::corrupt, "\"version\""},
      {"version not an array", F("[1,0]", "\"1.0\""), errc::corrupt, "version"},
      {"version with 3 numbers", F("[1,0]", "[1,0,0]"), errc::corrupt, "version"},
      {"missing leaves", F(R"("leaves":)", R"("leafs":)"), errc::corrupt, "missing key \"leaves\""},
      {"missing dtype", F(R"("dtype":"bf16",)", ""), errc::corrupt,
       "leaf 1 \"params/b\": missing key \"dtype\""},
      {"missing file size", F(R"(,"size":100)", ""), errc::corrupt, "missing key \"size\""},
      {"unknown key at 1.0", F(R"("files":)", R"("extra":1,"files":)"), errc::corrupt, "\"extra\""},
      {"duplicate root key",
       F(R"("format":"ckpt-index",)", R"("format":"ckpt-index","format":"ckpt-index",)"),
       errc::corrupt, "duplicate key \"format\""},
      {"duplicate leaf key", F(R"("path":"xs/0",)", R"("path":"xs/0","path":"xs/0",)"),
       errc::corrupt, "duplicate key \"path\""},
      {"number as string", F(R"("size":100)", R"("size":"100")"), errc::corrupt,
       "non-negative integer"},
      {"number as float", F(R"("size":100)", R"("size":100.5)"), errc::corrupt,
       "non-negative integer"},
      {"number with exponent", F(R"("size":100)", R"("size":1e2)"), errc::corrupt,
       "non-negative integer"},
      {"negative number", F(R"("size":100)", R"("size":-100)"), errc::corrupt,
       "non-negative integer"},
      {"number above 64 bits", F(R"("size":100)", R"("size":99999999999999999999)"), errc::corrupt,
       "size"},
      {"files not an array", F(R"("files":[)", R"("files":{"a":1},"x":[)"), errc::corrupt,
       "files: expected an array"},
      {"truncated JSON", [] { return base_index.substr(0, base_index.size() / 2); }, errc::corrupt,
       "index.json"},
      {"truncated by one byte", [] { return base_index.substr(0, base_index.size() - 1); },
       errc::corrupt, "index.json"},
      {"trailing garbage", [] { return base_index + "x"; }, errc::corrupt, "index.json"},
      {"trailing object", [] { return base_index + "{}"; }, errc::corrupt, "index.json"},
      {"empty input", [] { return std::string(); }, errc::corrupt, "empty"},
      {"whitespace only", [] { return std::string("  \n"); }, errc::corrupt, "index.json"},
      {"non-object root", [] { return std::string("[1,2]"); }, errc::corrupt, "root"},
      {"string root", [] { return std::string("\"ckpt-index\""); }, errc::corrupt, "root"},
      {"invalid UTF-8", F(R"("params/w")", "\"params/\xff\""), errc::corrupt, "index.json"},
  };
  CHECK(cases.size() >= 40);
  for (const auto& c : cases) {
    INFO("case: " << c.name);
    auto r = parse(c.json(), c.limits);
    REQUIRE_FALSE(r);
    INFO("message: " << r.error().message());
    CHECK(r.error() == c.expected);
    CHECK_THAT(r.error().message(), Catch::Contains(c.needle));
    CHECK_THAT(r.error().message(), Catch::StartsWith("index.json"));
  }
}

TEST_CASE("deep nesting outside the tree does not overflow the stack", "[format]") {
  std::string deep(200000, '[');
  deep += std::string(200000, ']');
  auto json = replaced(base_index, R"("version":[1,0],)", R"("version":[1,1],"x":)" + deep + ",");
  auto r = parse(json);
  if (!r) CHECK((r.error() == errc::corrupt || r.error() == errc::limit_exceeded));
  auto unbalanced = replaced(base_index, R"("version":[1,0],)",
                             R"("version":[1,1],"x":)" + std::string(200000, '[') + ",");
  auto r2 = parse(unbalanced);
  REQUIRE_FALSE(r2);
  CHECK((r2.error() == errc::corrupt || r2.error() == errc::limit_exceeded));
}

TEST_CASE("truncating a valid index anywhere never parses and never crashes", "[format]") {
  for (std::size_t n = 0; n < base_index.size(); ++n) {
    auto r = parse(base_index.substr(0, n));
    REQUIRE_FALSE(r);
    CHECK((r.error() == errc::corrupt || r.error() == errc::unsupported_version));
  }
}

// =============================================================================================
// Commit marker
// =============================================================================================

TEST_CASE("commit marker round trip", "[format]") {
  for (bool job : {false, true}) {
    fmt::commit_marker m;
    m.index_bytes = 12345;
    m.index_xxh3 = 0x0123456789abcdefULL;
    m.metadata_bytes = 2;
    m.metadata_xxh3 = 0xffffffffffffffffULL;
    m.has_job = job;
    m.job_bytes = job ? 77 : 0;
    m.job_xxh3 = job ? 42 : 0;
    m.logical_bytes = 1604697616;
    m.stored_bytes = 1500000000;
    m.created_unix_ns = 1764331200123456789ULL;
    auto s = fmt::encode_commit(m);
    CHECK((s.find("\"job\"") != std::string::npos) == job);
    auto r = parse_c(s);
    REQUIRE(r);
    const auto& p = r.value();
    CHECK(p.index_bytes == m.index_bytes);
    CHECK(p.index_xxh3 == m.index_xxh3);
    CHECK(p.metadata_bytes == m.metadata_bytes);
    CHECK(p.metadata_xxh3 == m.metadata_xxh3);
    CHECK(p.has_job == m.has_job);
    CHECK(p.job_bytes == m.job_bytes);
    CHECK(p.job_xxh3 == m.job_xxh3);
    CHECK(p.logical_bytes == m.logical_bytes);
    CHECK(p.stored_bytes == m.stored_bytes);
    CHECK(p.created_unix_ns == m.created_unix_ns);
    CHECK(fmt::encode_commit(p) == s);
  }
}

TEST_CASE("malformed commit markers are refused", "[format]") {
  fmt::commit_marker m;
  m.has_job = true;
  const std::string good = fmt::encode_commit(m);
  REQUIRE(parse_c(good));
  struct bad_case {
    std::string from, to;
    errc expected;
    std::string needle;
  };
  std::vector<bad_case> cases = {
      {R"("ckpt-commit")", R"("ckpt-index")", errc::corrupt, "\"ckpt-index\""},
      {"[1,2]", "[2,0]", errc::unsupported_version, "2.0"},
      {R"("version":[1,2],)", "", errc::corrupt, "version"},
      {R"("index":)", R"("indx":)", errc::corrupt, "missing key \"index\""},
      {R"(,"stored_bytes":0)", "", errc::corrupt, "stored_bytes"},
      {R"("xxh3":"0000000000000000")", R"("xxh3":"000000000000000")", errc::corrupt, "checksum"},
      {R"("xxh3":"0000000000000000")", R"("xxh3":"zzzzzzzzzzzzzzzz")", errc::corrupt, "checksum"},
      {R"("xxh3":"0000000000000000")", R"("xxh3":0)", errc::corrupt, "index.xxh3"},
      {R"("bytes":0)", R"("bytes":"0")", errc::corrupt, "index.bytes"},
      {R"("bytes":0)", R"("bytes":-1)", errc::corrupt, "index.bytes"},
      {R"(,"xxh3")", R"(,"bytes":1,"xxh3")", errc::corrupt, "duplicate key"},
      {R"("logical_bytes":0)", R"("logical_bytes":0.5)", errc::corrupt, "logical_bytes"},
      {R"("created_unix_ns")", R"("extra":1,"created_unix_ns")", errc::corrupt, "extra"},
      {R"("metadata":{)", R"("metadata":[{)", errc::corrupt, "metadata"},
  };
  for (const auto& c : cases) {
    INFO(c.from << " -> " << c.to);
    auto r = parse_c(replaced(good, c.from, c.to));
    REQUIRE_FALSE(r);
    INFO(r.error().message());
    CHECK(r.error() == c.expected);
    CHECK_THAT(r.error().message(), Catch::Contains(c.needle));
    CHECK_THAT(r.error().message(), Catch::StartsWith("COMMIT"));
  }
  for (std::string s : {std::string(), std::string("{}"), std::string("null"), good + "x",
                        good.substr(0, good.size() / 2)}) {
    auto r = parse_c(s);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::corrupt);
  }
  // A newer minor version with extra keys is fine.
  auto newer = replaced(replaced(good, "[1,2]", "[1,3]"), R"("created_unix_ns")",
                        R"("extra":{"a":[1]},"created_unix_ns")");
  CHECK(parse_c(newer));
}

// =============================================================================================
// Benchmarks (hidden: run with "[.bench]")
// =============================================================================================

namespace {

/// The "small" workload's index: 200 groups x 100 f32 leaves, one chunk each.
fmt::index small_workload_index() {
  splitmix r{2024};
  tree t = tree::dict();
  for (int g = 0; g < 200; ++g) {
    char gn[32];
    std::snprintf(gn, sizeof gn, "group_%03d", g);
    tree grp = tree::dict();
    for (int i = 0; i < 100; ++i) {
      char tn[32];
      std::snprintf(tn, sizeof tn, "t_%02d", i);
      grp.set(tn, spec(dtype::f32, {static_cast<std::int64_t>(1024 + r.next() % 15361)}));
    }
    t.set(gn, std::move(grp));
  }
  fmt::index ix = make_index(t);
  for (auto& le : ix.leaves) {
    for (auto& c : le.chunks)
      c.xxh3 = r.next();
  }
  return ix;
}

template <class F>
double best_seconds(int runs, F&& f) {
  double best = 1e9;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

TEST_CASE("bench: index parse speed on the small workload (20,000 leaves)", "[.bench]") {
  auto ix = small_workload_index();
  padded json(fmt::encode_index(ix));
  double enc = best_seconds(10, [&] { (void)fmt::encode_index(ix); });
  std::vector<double> all;
  for (int i = 0; i < 20; ++i) {
    all.push_back(best_seconds(1, [&] {
      auto r = fmt::parse_index(json.view());
      REQUIRE(r);
    }));
  }
  std::sort(all.begin(), all.end());
  const double mb = static_cast<double>(json.size) / 1e6;
  std::printf(
      "index: %zu bytes, 20000 leaves; encode %.2f ms (%.0f MB/s); parse+validate best "
      "%.2f ms (%.0f MB/s), median %.2f ms (%.0f MB/s)\n",
      json.size, enc * 1e3, mb / enc, all.front() * 1e3, mb / all.front(),
      all[all.size() / 2] * 1e3, mb / all[all.size() / 2]);
}

TEST_CASE("bench: shuffle, encode and decode throughput", "[.bench]") {
  const std::size_t bytes = 4 << 20;
  for (const auto& d : datasets(bytes)) {
    std::vector<std::byte> tmp(bytes), out(bytes);
    double sh = best_seconds(10, [&] { fmt::shuffle_bytes(d.bytes, d.element_size, tmp); });
    double ush = best_seconds(10, [&] { fmt::unshuffle_bytes(tmp, d.element_size, out); });
    const fmt::codec_policy policy;
    fmt::codec c{};
    double choose = best_seconds(
        10, [&] { c = fmt::choose_codec(d.bytes, d.element_size, d.floating, policy); });
    std::vector<std::byte> stored(fmt::encode_bound(bytes));
    std::size_t n = 0;
    double enc = best_seconds(
        5, [&] { n = fmt::encode_chunk(c, d.bytes, d.element_size, stored, policy.min_ratio); });
    if (n == 0) {
      c = fmt::codec::raw;
      n = fmt::encode_chunk(c, d.bytes, d.element_size, stored, policy.min_ratio);
    }
    double dec = best_seconds(
        5, [&] { REQUIRE(fmt::decode_chunk(c, std::span(stored).first(n), d.element_size, out)); });
    double sum = best_seconds(5, [&] { (void)fmt::checksum(std::span(stored).first(n)); });
    const double mb = static_cast<double>(bytes) / 1e6;
    std::printf(
        "%-14s shuffle %6.0f MB/s unshuffle %6.0f MB/s choose %7.0f MB/s -> %-11s "
        "ratio %5.2f encode %6.0f MB/s decode %6.0f MB/s xxh3 %6.0f MB/s\n",
        d.name.c_str(), mb / sh, mb / ush, mb / choose, std::string(fmt::codec_name(c)).c_str(),
        static_cast<double>(bytes) / static_cast<double>(n), mb / enc, mb / dec,
        static_cast<double>(n) / 1e6 / sum);
  }
}

TEST_CASE("a dtype name with a trailing NUL is not that dtype", "[format]") {
  tree t = tree::dict({{"w", spec(dtype::f32, {4})}});
  std::string json = fmt::encode_index(make_index(t));
  REQUIRE(parse(json));
  const std::string from = "\"dtype\":\"f32\"";
  auto at = json.find(from);
  REQUIRE(at != std::string::npos);
  json.replace(at, from.size(), "\"dtype\":\"f32\\u0000\"");
  auto r = parse(json);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ckpt::errc::corrupt);
}
