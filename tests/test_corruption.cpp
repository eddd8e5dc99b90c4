// Corruption sweep: every file of a small checkpoint (raw, lz4 and shuffle-lz4 chunks, several
// data files) is damaged in many ways - bit flips, truncations, zeroed 4 KiB blocks, deleted,
// swapped and duplicated files - and each damaged checkpoint is loaded. A load must fail with a
// clear error, or (only where the damage hit bytes that nothing reads, e.g. the zero padding
// between O_DIRECT units) return exactly the saved data. Never wrong data, never a crash (the
// asan preset runs this too).
//
// Size: env CKPT_MUTATIONS (default 10000, ~10 s); tests/reliability.sh runs 100000.
// Identical loads come only from bytes no load trusts: O_DIRECT zero padding between units in
// the data files, the digits of COMMIT's created_unix_ns, its trailing newline. Every damaged
// chunk byte must be caught. Prints the "corruption:" figure lines.
#include "format/index.hpp"
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const fs::path& p, std::string_view content) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

void write_byte(const fs::path& p, std::uint64_t offset, char c) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, &c, 1, static_cast<off_t>(offset)) == 1);
  ::close(fd);
}

// The tree under test: leaves that end up raw (random floats), shuffle-lz4 (smooth floats),
// lz4 (repetitive integers) and a tiny one, each of several chunks.
tree make_tree() {
  auto noise = array::zeros(dtype::f32, {6144}).value();
  auto rb = ckpt::test::random_bytes(noise.num_bytes(), 11);
  std::memcpy(noise.as_mutable<float>().data(), rb.data(), rb.size());
  auto smooth = array::zeros(dtype::f32, {16, 1024}).value();
  {
    auto s = smooth.as_mutable<float>();
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = 1.0f + static_cast<float>(i % 97) * 0.25f;
  }
  auto ints = array::zeros(dtype::i32, {8192}).value();
  {
    auto s = ints.as_mutable<std::int32_t>();
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = static_cast<std::int32_t>(i % 13);
  }
  auto tiny = array::zeros(dtype::u8, {37}).value();
  {
    auto s = tiny.as_mutable<std::uint8_t>();
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = static_cast<std::uint8_t>(i * 7);
  }
  return tree::dict(
      {{"noise", noise}, {"layers", tree::list({tree(smooth), tree(ints)})}, {"tiny", tiny}});
}

struct mutation {
  enum kind_t { flip, truncate, zero_block, remove, swap, duplicate } kind;
  std::size_t file = 0;   // index into the file list
  std::size_t other = 0;  // swap / duplicate: the second file
  std::uint64_t offset = 0;
  std::uint8_t bit = 0;
};

}  // namespace

TEST_CASE("every damaged checkpoint file fails the load or loads identical data", "[corrupt]") {
  std::uint64_t budget = 10000;
  if (const char* e = std::getenv("CKPT_MUTATIONS")) budget = std::strtoull(e, nullptr, 10);
  REQUIRE(budget > 0);

  ckpt::test::temp_dir root(fs::is_directory("/dev/shm") ? fs::path("/dev/shm")
                                                         : fs::temp_directory_path());
  const fs::path dir = root / "ckpt";
  const tree original = make_tree();
  const boost::json::object meta{{"step", 7}, {"note", "corruption sweep"}};
  const boost::json::object job{{"job", "sweep"}, {"seed", 42}};
  ckpt::save_options so;
  so.chunk_bytes = 16 << 10;
  so.data_files = 2;
  so.job = job;
  REQUIRE(ckpt::save_blocking(dir, original, meta, so));

  // Byte ranges of each data file that a load reads (the chunks); the rest is O_DIRECT padding.
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint64_t>>> read_ranges;
  // The checkpoint really holds all three codecs and several chunks per data file.
  {
    std::string text = read_all(dir / std::string(ckpt::format::index_file));
    std::string padded = text + std::string(ckpt::format::parse_padding, ' ');
    auto ix = ckpt::format::parse_index(std::string_view(padded.data(), text.size()));
    REQUIRE(ix);
    std::set<ckpt::format::codec> codecs;
    std::size_t chunks = 0;
    for (const auto& le : ix.value().leaves) {
      for (const auto& c : le.chunks)
        codecs.insert(c.codec);
      chunks += le.chunks.size();
    }
    CHECK(codecs.count(ckpt::format::codec::raw) == 1);
    CHECK(codecs.count(ckpt::format::codec::lz4) == 1);
    CHECK(codecs.count(ckpt::format::codec::shuffle_lz4) == 1);
    CHECK(chunks >= 8);
    CHECK(ix.value().files.size() == 2);
    for (const auto& le : ix.value().leaves)
      for (const auto& c : le.chunks)
        read_ranges[ix.value().files[c.file].name].push_back({c.offset, c.offset + c.stored_size});
  }

  std::vector<std::string> names;
  std::vector<std::string> contents;
  for (const auto& e : fs::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& n : names)
    contents.push_back(read_all(dir / n));
  REQUIRE(names.size() >= 6);  // COMMIT, index, metadata, job, 2 data files

  // The candidates: every byte and every length of the small files, every 4 KiB block, every
  // deletion, swap and duplication; the data files get the rest of the budget in bit flips and
  // truncations (a stride plus random offsets).
  std::mt19937_64 rng(20261128);
  std::vector<mutation> small;
  std::vector<std::size_t> data_files;
  for (std::size_t f = 0; f < names.size(); ++f) {
    const std::uint64_t size = contents[f].size();
    const bool is_data = names[f].rfind("data-", 0) == 0;
    if (is_data) data_files.push_back(f);
    for (std::uint64_t b = 0; b < std::max<std::uint64_t>(size, 1); b += 4096)
      small.push_back({mutation::zero_block, f, 0, b, 0});
    small.push_back({mutation::remove, f, 0, 0, 0});
    for (std::size_t g = 0; g < names.size(); ++g) {
      if (g == f) continue;
      if (g > f) small.push_back({mutation::swap, f, g, 0, 0});
      small.push_back({mutation::duplicate, f, g, 0, 0});
    }
    if (is_data) continue;
    for (std::uint64_t o = 0; o < size; ++o) {
      small.push_back({mutation::flip, f, 0, o, static_cast<std::uint8_t>(rng() % 8)});
      small.push_back({mutation::truncate, f, 0, o, 0});
    }
  }
  std::vector<mutation> all;
  if (small.size() >= budget) {
    std::shuffle(small.begin(), small.end(), rng);
    small.resize(budget);
    all = std::move(small);
  } else {
    all = std::move(small);
    const std::uint64_t rest = budget - all.size();
    std::uint64_t data_bytes = 0;
    for (auto f : data_files)
      data_bytes += contents[f].size();
    REQUIRE(data_bytes > 0);
    // Half on a stride, half at random; 7/8 flips, 1/8 truncations.
    const std::uint64_t strided = rest / 2;
    const std::uint64_t stride =
        std::max<std::uint64_t>(1, data_bytes / std::max<std::uint64_t>(strided, 1));
    std::uint64_t made = 0;
    for (std::uint64_t pos = 0; pos < data_bytes && made < strided; pos += stride, ++made) {
      std::uint64_t p = pos;
      std::size_t f = data_files[0];
      for (auto d : data_files) {
        if (p < contents[d].size()) {
          f = d;
          break;
        }
        p -= contents[d].size();
      }
      const bool trunc = made % 8 == 7;
      all.push_back({trunc ? mutation::truncate : mutation::flip, f, 0, p,
                     static_cast<std::uint8_t>(made % 8)});
    }
    while (all.size() < budget) {
      std::size_t f = data_files[rng() % data_files.size()];
      std::uint64_t p = rng() % contents[f].size();
      if (rng() % 8 != 0) {  // mostly inside a chunk: the bytes that matter
        const auto& rr = read_ranges[names[f]];
        const auto& r = rr[rng() % rr.size()];
        p = r.first + rng() % (r.second - r.first);
      }
      const bool trunc = rng() % 8 == 0;
      all.push_back({trunc ? mutation::truncate : mutation::flip, f, 0, p,
                     static_cast<std::uint8_t>(rng() % 8)});
    }
  }

  // Does a mutation change bytes a load reads? Everything in the small files counts (even the
  // COMMIT fields a load does not check); in data files only chunk bytes, and truncations.
  auto hits_read_bytes = [&](const mutation& m) {
    if (m.kind != mutation::flip || names[m.file].rfind("data-", 0) != 0) return true;
    for (const auto& [b, e] : read_ranges[names[m.file]])
      if (m.offset >= b && m.offset < e) return true;
    return false;
  };
  std::uint64_t detected = 0, identical = 0, wrong = 0, unclear = 0;
  std::uint64_t read_hits = 0, read_detected = 0, data_read_hits = 0, data_read_detected = 0;
  std::map<std::string, std::uint64_t> by_kind_identical;
  std::map<int, std::uint64_t> by_code;
  for (const auto& m : all) {
    const fs::path p = dir / names[m.file];
    const fs::path q = dir / names[m.other];
    std::string what;
    switch (m.kind) {
      case mutation::flip:
        write_byte(p, m.offset, static_cast<char>(contents[m.file][m.offset] ^ (1 << m.bit)));
        what = "flip";
        break;
      case mutation::truncate:
        REQUIRE(::truncate(p.c_str(), static_cast<off_t>(m.offset)) == 0);
        what = "truncate";
        break;
      case mutation::zero_block: {
        std::string c = contents[m.file];
        const std::uint64_t end = std::min<std::uint64_t>(c.size(), m.offset + 4096);
        std::fill(c.begin() + static_cast<std::ptrdiff_t>(m.offset),
                  c.begin() + static_cast<std::ptrdiff_t>(end), '\0');
        write_all(p, c);
        what = "zero block";
        break;
      }
      case mutation::remove:
        fs::remove(p);
        what = "remove";
        break;
      case mutation::swap:
        write_all(p, contents[m.other]);
        write_all(q, contents[m.file]);
        what = "swap";
        break;
      case mutation::duplicate:
        write_all(q, contents[m.file]);
        what = "duplicate";
        break;
    }
    auto r = ckpt::load_blocking(dir);
    const bool hit = hits_read_bytes(m);
    const bool data = names[m.file].rfind("data-", 0) == 0;
    read_hits += hit;
    read_detected += hit && !r;
    data_read_hits += hit && data;
    data_read_detected += hit && data && !r;
    if (r) {
      const auto& got = r.value();
      if (got.tree == original && got.metadata == meta && got.job && *got.job == job) {
        ++identical;
        ++by_kind_identical[what + " " + names[m.file]];
      } else {
        ++wrong;
        FAIL_CHECK("silent wrong load: " << what << " " << names[m.file] << " offset " << m.offset
                                         << " bit " << int(m.bit));
      }
    } else {
      ++detected;
      ++by_code[r.error().code().value()];
      const std::string msg = r.error().message();
      // A clear error names the checkpoint (or a file inside it).
      if (msg.find(dir.string()) == std::string::npos) {
        ++unclear;
        if (unclear <= 5)
          FAIL_CHECK("unclear error for " << what << " " << names[m.file] << ": " << msg);
      }
    }
    // Restore.
    switch (m.kind) {
      case mutation::flip:
        write_byte(p, m.offset, contents[m.file][m.offset]);
        break;
      case mutation::swap:
      case mutation::duplicate:
        write_all(q, contents[m.other]);
        [[fallthrough]];
      default:
        write_all(p, contents[m.file]);
    }
  }
  REQUIRE(ckpt::load_blocking(dir).value().tree == original);

  const std::uint64_t n = all.size();
  for (const auto& [k, v] : by_kind_identical)
    std::printf("  identical load after %s: %llu\n", k.c_str(), static_cast<unsigned long long>(v));
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  auto pct = [](std::uint64_t a, std::uint64_t b) {
    return b == 0 ? 100.0 : 100.0 * static_cast<double>(a) / static_cast<double>(b);
  };
  std::printf(
      "corruption: damage to bytes a load reads (small files, chunk bytes, truncations, "
      "deletions, swaps): %llu, detected %llu (%.2f%%)\n",
      u(read_hits), u(read_detected), pct(read_detected, read_hits));
  std::printf(
      "corruption: mutations %llu, detected %llu (%.1f%%; damaged chunk bytes %llu/%llu "
      "= %.1f%%), identical loads %llu (unread bytes), silent wrong loads %llu, "
      "crashes 0\n",
      u(n), u(detected), pct(detected, n), u(data_read_detected), u(data_read_hits),
      pct(data_read_detected, data_read_hits), u(identical), u(wrong));
  std::fflush(stdout);
  CHECK(wrong == 0);
  CHECK(unclear == 0);
  CHECK(detected + identical == n);
  CHECK(data_read_detected == data_read_hits);  // every damaged chunk byte is caught
}
