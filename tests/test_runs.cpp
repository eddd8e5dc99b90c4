// Fill runs (format 1.2): whole pages of zeros or of one repeated value are recorded in the index
// instead of stored, for every dtype, through both save paths (streamed from the leaf and
// captured), and come back bit-exact through a fresh load, an in-place load into a template and
// verify; hostile run lists are refused with a message that names the chunk.
#include "format/index.hpp"
#include "index_support.hpp"
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/verify.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <string>

namespace fmt = ckpt::format;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

constexpr std::size_t chunk = 64 << 10;
// Three whole chunks and a tail of three pages and 8 bytes (a multiple of every element size).
constexpr std::size_t leaf_bytes = 3 * chunk + 3 * 4096 + 8;

// Chunk 0 zeros; chunk 1 one value repeated; chunk 2 pages of zeros, of the value and of noise;
// the tail two zero pages, then noise. `value` holds an element's bytes (all non-zero).
std::vector<std::uint8_t> runs_bytes(dtype t, std::uint64_t seed, std::uint8_t value[8]) {
  const std::size_t es = dtype_size(t);
  auto noise = ckpt::test::random_bytes(leaf_bytes, seed);
  if (t == dtype::bool_) {
    for (auto& b : noise)
      b &= 1;
  }
  for (std::size_t k = 0; k < es; ++k)
    value[k] = t == dtype::bool_ ? 1 : static_cast<std::uint8_t>(0x3c + 17 * k + seed);
  std::vector<std::uint8_t> b(leaf_bytes, 0);
  auto put_value = [&](std::size_t at, std::size_t n) {
    for (std::size_t i = 0; i < n; i += es)
      std::memcpy(&b[at + i], value, es);
  };
  put_value(chunk, chunk);
  for (std::size_t pg = 0; pg < chunk / 4096; ++pg) {
    const std::size_t at = 2 * chunk + pg * 4096;
    if (pg % 4 == 1) put_value(at, 4096);
    if (pg % 4 == 2) std::memcpy(&b[at], &noise[at], 4096);
  }
  std::memcpy(&b[3 * chunk + 2 * 4096], &noise[3 * chunk + 2 * 4096], 4096 + 8);
  return b;
}

array owned_array(dtype t, const std::vector<std::uint8_t>& bytes) {
  auto a = array::zeros(t, {static_cast<std::int64_t>(bytes.size() / dtype_size(t))}).value();
  std::memcpy(a.mutable_bytes().data(), bytes.data(), bytes.size());
  return a;
}

bool same_bytes(const array& a, const std::vector<std::uint8_t>& bytes) {
  return a.num_bytes() == bytes.size() &&
         std::memcmp(a.bytes().data(), bytes.data(), bytes.size()) == 0;
}

std::string parse_error(const std::string& json) {
  std::string text = json;
  text.reserve(text.size() + fmt::parse_padding);
  auto r = fmt::parse_index(text);
  return r ? std::string("(parsed)") : r.error().message();
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("zero and constant chunks round-trip for every dtype", "[runs][save][load]") {
  ckpt::test::temp_dir dir;
  const bool captured = GENERATE(false, true);
  INFO((captured ? "start_save (captured)" : "save_blocking (streamed from the leaf)"));
  for (dtype t : ckpt::all_dtypes) {
    INFO("dtype " << dtype_name(t));
    const std::size_t es = dtype_size(t);
    std::uint8_t value[8] = {};
    const auto bytes = runs_bytes(t, es + (captured ? 10 : 0), value);
    tree tr = tree::dict(
        {{"x", owned_array(t, bytes)}, {"tiny", owned_array(t, {0, 0, 0, 0, 0, 0, 0, 0})}});
    ckpt::save_options so;
    so.chunk_bytes = chunk;
    const auto path = dir / (std::string(dtype_name(t)) + (captured ? "-c" : "-s"));
    if (captured) {
      auto h = ckpt::start_save(path, tr, {}, so);
      REQUIRE(h.wait_committed());
    } else {
      REQUIRE(ckpt::save_blocking(path, tr, {}, so));
    }

    // What the index records: chunk 0 and 1 store nothing, chunk 2 and the tail only their
    // pages of noise.
    const auto ix = ckpt::test::read_index(path);
    const auto& le = ix.leaves[0].path == "x" ? ix.leaves[0] : ix.leaves[1];
    REQUIRE(le.chunks.size() == 4);
    CHECK(le.chunks[0].stored_size == 0);
    CHECK(le.chunks[0].runs == std::vector<fmt::fill_run>{{0, chunk, 0, 0}});
    CHECK(le.chunks[0].xxh3 == 0x2d06800538d394c2);  // (XXH3-64 of no bytes, FORMAT.md)
    CHECK(le.chunks[1].stored_size == 0);
    REQUIRE(le.chunks[1].runs.size() == 1);
    CHECK(le.chunks[1].runs[0].length == chunk);
    CHECK(le.chunks[1].runs[0].width == es);
    CHECK(std::memcmp(&le.chunks[1].runs[0].fill, value, es) == 0);
    CHECK(fmt::run_bytes(le.chunks[2].runs) == 12 * 4096);  // 12 of 16 pages
    CHECK(le.chunks[2].stored_size <= 4 * 4096);
    CHECK(fmt::run_bytes(le.chunks[3].runs) == 2 * 4096);
    const auto& tiny = ix.leaves[0].path == "x" ? ix.leaves[1] : ix.leaves[0];
    CHECK(tiny.chunks[0].runs.empty());  // under a page: no runs

    // A fresh load, a load into a template holding a sentinel, and verify.
    auto loaded = ckpt::load_blocking(path);
    REQUIRE(loaded);
    CHECK(same_bytes(loaded.value().tree.at("x").value()->leaf(), bytes));
    std::vector<std::uint8_t> sentinel(leaf_bytes, 0xab);
    tree tmpl = tree::dict({{"x", array::borrow(t, {static_cast<std::int64_t>(leaf_bytes / es)},
                                                std::as_writable_bytes(std::span(sentinel)))
                                      .value()},
                            {"tiny", array::spec(t, {static_cast<std::int64_t>(8 / es)}).value()}});
    REQUIRE(ckpt::load_blocking(path, &tmpl));
    CHECK(sentinel == bytes);
    auto report = ckpt::verify_checkpoint_blocking(path);
    REQUIRE(report);
    CHECK(report.value().ok());
    CHECK(report.value().chunks_checked == 5);
  }
}

TEST_CASE("fill runs: none without compression, shared by a differential save",
          "[runs][save][diff]") {
  ckpt::test::temp_dir dir;
  std::uint8_t value[8];
  const auto bytes = runs_bytes(dtype::f32, 3, value);
  tree tr = tree::dict({{"x", owned_array(dtype::f32, bytes)}});
  ckpt::save_options so;
  so.chunk_bytes = chunk;
  so.compress = false;
  REQUIRE(ckpt::save_blocking(dir / "raw", tr, {}, so));
  const auto raw_ix = ckpt::test::read_index(dir / "raw");
  for (const auto& c : raw_ix.leaves[0].chunks) {
    CHECK(c.runs.empty());
    CHECK(c.stored_size == c.raw_size);
  }

  so.compress = true;
  REQUIRE(ckpt::save_blocking(dir / "base", tr, {}, so));
  so.base = dir / "base";
  auto st = ckpt::save_blocking(dir / "next", tr, {}, so);
  REQUIRE(st);
  CHECK(st.value().shared_chunks == 4);
  // The all-run chunks link nothing; the others share the base's file.
  const auto ix = ckpt::test::read_index(dir / "next");
  CHECK(ix.leaves[0].chunks[0].stored_size == 0);
  CHECK(ix.leaves[0].chunks[0].file < ix.files.size());
  auto loaded = ckpt::load_blocking(dir / "next");
  REQUIRE(loaded);
  CHECK(same_bytes(loaded.value().tree.at("x").value()->leaf(), bytes));
  // A bit flip in the stored rest of chunk 2 is caught by its checksum.
  REQUIRE(ckpt::verify_checkpoint_blocking(dir / "next").value().ok());
}

TEST_CASE("hostile fill runs are refused, naming the chunk", "[runs][format]") {
  fmt::index ix;
  ix.files.push_back({"data-00000.bin", 8192, {}});
  fmt::leaf_entry le;
  le.path = "w";
  le.dtype = dtype::f32;
  le.shape = {4096};
  le.num_bytes = 16384;
  fmt::chunk_entry c;
  c.file = 0;
  c.offset = 0;
  c.stored_size = 8192;
  c.raw_size = 16384;
  c.codec = fmt::codec::raw;
  c.xxh3 = 0x1234;
  c.runs = {{0, 4096, 0, 0}, {8192, 4096, 0x3fc00000, 4}};
  le.chunks.push_back(c);
  ix.leaves.push_back(le);
  fmt::set_structure(ix, tree::dict({{"w", array::spec(dtype::f32, {4096}).value()}}));
  const std::string good = fmt::encode_index(ix);
  const std::string runs = R"([[0,4096],[8192,4096,"0000c03f"]])";
  REQUIRE(good.find(runs) != std::string::npos);
  CHECK(parse_error(good) == "(parsed)");
  {
    auto p = fmt::parse_index(good + std::string(fmt::parse_padding, ' ')).value();
    CHECK(p.leaves[0].chunks[0].runs == c.runs);
  }

  struct bad {
    std::string runs;
    std::string needle;
  };
  for (const bad& b : std::vector<bad>{
           {R"([[4096,4096],[0,4096]])", "precedes the run before"},
           {R"([[0,8192],[4096,4096]])", "overlaps"},
           {R"([[0,0],[8192,8192]])", "is empty"},
           {R"([[0,4096],[12288,8192]])", "ends beyond the chunk's 16384 raw bytes"},
           {R"([[2,4096],[8194,4096]])", "not on 4-byte elements"},
           {R"([[0,4096],[8192,4096,"00c03f"]])", "not 1, 2, 4 or 8 bytes of hex"},
           {R"([[0,4096],[8192,4096,"0000"]])", "2-byte fill value for 4-byte elements"},
           {R"([[0,4096],[8192,4096,"0000C03F"]])", "is not hex"},
           {R"([[0,4096],[8192,4096,7]])", "runs"},
           {R"([[0,4096,"00000000",1]])", "more than 3 elements"},
           {R"([])", "an empty list of runs"},
           {R"([[0,4096]])", "raw chunk stores 8192 bytes for 12288 raw bytes"},
       }) {
    INFO(b.runs);
    const std::string msg = parse_error(replaced(good, runs, b.runs));
    CHECK_THAT(msg,
               Catch::Contains("\"w\"") && Catch::Contains("chunk 0") && Catch::Contains(b.needle));
  }
  // A chunk that is all runs stores nothing, at offset 0, raw.
  const std::string all = R"([[0,16384]])";
  CHECK_THAT(parse_error(replaced(good, runs, all)), Catch::Contains("runs cover the chunk"));
  CHECK(parse_error(replaced(replaced(good, runs, all), "[0,0,8192,16384,", "[0,0,0,16384,")) ==
        "(parsed)");
  CHECK_THAT(
      parse_error(replaced(replaced(good, runs, all), "[0,0,8192,16384,", "[0,4096,0,16384,")),
      Catch::Contains("runs cover the chunk"));
  // Runs are 1.2: a 1.1 index that has them is corrupt.
  CHECK_THAT(parse_error(replaced(good, "\"version\":[1,2]", "\"version\":[1,1]")),
             Catch::Contains("fill runs in a version 1.1 index"));
}

TEST_CASE("find_runs: one byte off anywhere in a page and the page is no run", "[runs]") {
  // page_is compares the page with itself a word further on: every byte place must count, for
  // zeros and for a value of each element size.
  std::vector<std::byte> page(fmt::run_page);
  for (std::size_t es : {1u, 2u, 4u, 8u}) {
    const std::uint64_t value = es == 1 ? 0 : 0x0123456789abcdefull;
    for (std::size_t i = 0; i < page.size(); i += es)
      std::memcpy(page.data() + i, &value, es);
    std::vector<fmt::fill_run> runs;
    fmt::find_runs(page, es, 0, runs);
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].length == fmt::run_page);
    std::size_t missed = 0;
    for (std::size_t at = 0; at < page.size(); ++at) {
      page[at] ^= std::byte{0x10};
      runs.clear();
      fmt::find_runs(page, es, 0, runs);
      missed += runs.size();
      page[at] ^= std::byte{0x10};
    }
    INFO("element size " << es);
    CHECK(missed == 0);
  }
}
